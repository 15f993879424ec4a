"""Import TensorFlow without its start-up chatter.

``import tensorflow`` (TF 2.21) writes, twice, an absl preamble ("WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR") and a oneDNN "I0000 ... port.cc" notice to
the process-level stderr (fd 2), whatever TF_CPP_MIN_LOG_LEVEL says. ``import_tensorflow`` runs the
first import with fd 2 captured and writes back every captured line that is not one of those
notices; with ``FEDTINY_VERBOSE=1`` (``fedtiny --verbose``) it writes back everything.

It also drops TensorFlow's "triggered tf.function retracing" warnings from its Python logger:
every device, seed and variant builds a model of its own, so each model's first predict traces a
new function by design (``RetracingFilter``; kept with ``--verbose``).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^I0000 .*\] oneDNN custom operations are on\."),
    re.compile(r"^[IW]0000 .*(cuda|TensorRT|cpu_feature_guard|computation placer)", re.IGNORECASE),
)


def verbose() -> bool:
    return os.environ.get("FEDTINY_VERBOSE", "") not in ("", "0")


def filter_noise(text: str) -> str:
    """The lines of ``text`` that are not TensorFlow start-up notices (``NOISE``)."""
    kept = [line for line in text.splitlines(keepends=True)
            if not any(p.search(line.rstrip("\n")) for p in NOISE)]
    return "".join(kept)


class RetracingFilter:
    """A logging filter that drops TensorFlow's tf.function retracing warnings."""

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


RETRACING = RetracingFilter()


def _quiet_retracing(tf) -> None:
    if not verbose():
        tf.get_logger().addFilter(RETRACING)       # the same filter object: added once


def import_tensorflow():
    """``import tensorflow`` (and keras) with the start-up notices removed; returns the module."""
    if "tensorflow" in sys.modules or verbose():
        import keras  # noqa: F401
        import tensorflow as tf
        _quiet_retracing(tf)
        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = filter_noise(tmp.read().decode(errors="replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
    _quiet_retracing(tf)
    return tf
