"""Type-check the generated main.cpp with the host g++ against minimal STAND-IN headers.

This is not a TFLM build (TFLM's C++ sources and the Arduino cores cannot be fetched here): the
stand-ins declare only the API surface the sketch uses, with the signatures of TFLM's
MicroInterpreter / MicroMutableOpResolver / GetModel and Arduino's Serial. It catches C++ mistakes
in the template (typos, wrong types, missing macros) for both boards' switches (static arena vs
heap arena).
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from fedtiny.codegen.boards import load_board
from fedtiny.codegen.ops import OP_TABLE
from fedtiny.codegen.render import render_sketch, sketch_context

STUBS = {
    "Arduino.h": """
#pragma once
#include <stddef.h>
#include <stdint.h>
struct FakeSerial {
  void begin(unsigned long) {}
  explicit operator bool() const { return true; }
  int available() { return 0; }
  int read() { return -1; }
  size_t write(const uint8_t*, size_t n) { return n; }
  void flush() {}
};
extern FakeSerial Serial;
unsigned long micros();
unsigned long millis();
void delay(unsigned long);
void NVIC_SystemReset();
struct FakeEsp { void restart() {} };
extern FakeEsp ESP;
""",
    "TensorFlowLite.h": "#pragma once\n",
    "tensorflow/lite/schema/schema_generated.h": """
#pragma once
#include <stdint.h>
#define TFLITE_SCHEMA_VERSION (3)
namespace tflite {
struct Model { uint32_t version() const; };
inline const Model* GetModel(const void* buf) { return static_cast<const Model*>(buf); }
}
""",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h": """
#pragma once
#include "tensorflow/lite/micro/micro_interpreter.h"
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
""" + "".join(f"  TfLiteStatus {m}();\n" for m in sorted(set(OP_TABLE.values()))) + """
};
}
""",
    "tensorflow/lite/micro/micro_interpreter.h": """
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/schema/schema_generated.h"
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt8 = 9 } TfLiteType;
typedef union { int8_t* int8; float* f; } TfLitePtrUnion;
typedef struct { TfLiteType type; TfLitePtrUnion data; size_t bytes; } TfLiteTensor;
namespace tflite {
class MicroOpResolver {};
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,
                   size_t tensor_arena_size);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t arena_used_bytes() const;
};
}
""",
}


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("board", ["nano33ble", "esp32dev"])
def test_sketch_type_checks_against_stand_in_headers(board, tmp_path):
    from test_codegen import CONV1D_OPS  # the fixed op list of the golden test

    stubs = tmp_path / "stubs"
    for rel, text in STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(text)
    inc = tmp_path / "include"
    inc.mkdir()
    from fedtiny.firmware.protocol import render_c_header

    (inc / "fedtiny_protocol.h").write_text(render_c_header())
    (inc / "model_data.h").write_text("#pragma once\n#define FT_MODEL_BYTES 16\n"
                                      "extern const unsigned char g_fedtiny_model[FT_MODEL_BYTES];\n")
    (inc / "test_data.h").write_text("#pragma once\n#include <stdint.h>\n#define FT_N_TEST 2\n"
                                     "#define FT_TEST_WINDOW_BYTES 240\nextern const int8_t g_fedtiny_test_x[];\n"
                                     "extern const uint8_t g_fedtiny_test_y[];\n")
    heap = 1 if board == "esp32dev" else 0
    (inc / "fedtiny_config.h").write_text(
        "#pragma once\n#define FT_CONFIG_PROTOCOL_VERSION 1\n#define FT_BOARD \"b\"\n#define FT_DEVICE_ID 3\n"
        "#define FT_MODEL_SHA256 \"00\"\n#define FT_THRESHOLD 0.5f\n#define FT_Q0_FAULT_MAX 0\n"
        "#define FT_INPUT_BYTES 240\n#define FT_N_CLASSES 6\n#define FT_ARENA_BYTES 7008\n"
        f"#define FT_ARENA_ON_HEAP {heap}\n#define FT_SERIAL_BAUD 115200\n#define FT_SERIAL_WAIT_MS 3000\n")
    ops = [(op, OP_TABLE[op]) for op in CONV1D_OPS]
    src = tmp_path / "main.cpp"
    src.write_text(render_sketch(sketch_context(load_board(board), ops)))
    r = subprocess.run(["g++", "-std=c++11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                        "-I", str(stubs), "-I", str(inc), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
