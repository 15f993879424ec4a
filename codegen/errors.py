"""The one error type of the firmware generator.

Every failure a user can act on (bad board, missing run, model that does not fit, op that TFLM
cannot provide, PlatformIO missing) raises ``CodegenError`` with a one-line message; the click
commands (via ``fedtiny.errors.friendly``) print it as ``error: <message>`` and exit with code 2.
"""
from __future__ import annotations


class CodegenError(Exception):
    """A codegen/flash failure with a one-line, user-facing message."""
