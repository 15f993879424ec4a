"""The compiled runtime: the model's layers as plain generated C, no interpreter, no TFLM.

``graph.lower`` parses the .tflite flatbuffer and folds every constant (weights, biases with the
input zero point folded in, fixed-point multipliers and shifts, activation clamps, the softmax
exponential table) with ``qmath``, TFLite's integer arithmetic as pure functions; ``emit`` plans
one static activation buffer and renders ``ft_model.h`` / ``ft_model.c`` from ``templates/``.
The generated ``ft_model_invoke`` computes exactly what the TFLite Micro reference kernels
compute for int8 models, bit for bit (``tests/test_compiled_runtime.py`` checks every test window
of both built-in fleets against tflite-micro).
"""
