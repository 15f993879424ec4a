"""Protocol v3 between a fedtiny board (or the emulator) and the host, defined once.

The machine-readable definition is ``protocol.json`` beside this file; ``PROTOCOL.md`` explains it.
Everything here derives from that file:

* ``format_*``: the device side in Python (the emulator uses it); byte-identical to the C header.
* ``parse_line``: the host parser. A line is accepted only when its CRC matches and every field has
  the key, order and syntax the definition says; anything else (noise, a boot ROM's chatter, a
  corrupted or truncated line) returns None, so no value from a damaged line ever reaches a caller.
* ``encode_command`` / ``parse_command``: host -> device commands (the emulator parses with the
  Python mirror of ``ft_parse_command``).
* ``render_c_header``: ``fedtiny_protocol.h`` for the firmware, rendered from
  ``templates/fedtiny_protocol.h.j2`` with the definition's values.

Frame of every device line::

    @<type> <key>=<value> <key>=<value> ... *<crc>\\n

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the bytes from '@' up to the byte
before " *", as 4 lowercase hex digits. A host reads from the LAST '@' of a line, so a line glued
to noise (or to a line whose newline was lost) still resynchronises on the next frame.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

import numpy as np

HERE = Path(__file__).resolve().parent
DEFINITION: dict = json.loads((HERE / "protocol.json").read_text())

PROTOCOL_VERSION: int = int(DEFINITION["version"])
CMD_MAX_LINE: int = int(DEFINITION["command_max_line"])
OUT_MAX_LINE: int = int(DEFINITION["frame"]["out_max_line"])
DEFAULT_BAUD: int = int(DEFINITION["baud"])
START: str = DEFINITION["frame"]["start"]
CRC_SEP: str = DEFINITION["frame"]["checksum_sep"]
CRC_DIGITS: int = int(DEFINITION["frame"]["checksum_digits"])
CRC_POLY: int = int(DEFINITION["checksum"]["poly"])
CRC_INIT: int = int(DEFINITION["checksum"]["init"])
WORD_CHARS = frozenset(DEFINITION["word_chars"])
CLOCKS: tuple[str, ...] = tuple(DEFINITION["clock_values"])
# where a device's decision threshold came from (device.json ``threshold_origin``, banner ``thr_from``)
THRESHOLD_ORIGINS: tuple[str, ...] = tuple(DEFINITION["threshold_origin_values"])
MESSAGES: dict = DEFINITION["messages"]
COMMANDS: dict = DEFINITION["commands"]
ERROR_CODES: dict = DEFINITION["error_codes"]
# Largest infer payload: "infer " + 2 hex digits per byte + " *xxxx" within CMD_MAX_LINE - 1 chars.
INFER_MAX_PAYLOAD: int = (CMD_MAX_LINE - 1 - len("infer ") - len(CRC_SEP) - CRC_DIGITS) // 2

# what a firmware classifies: its embedded test windows (and 'infer'), or its sensor ('live')
INPUTS: tuple[str, ...] = tuple(DEFINITION["input_values"])
# where a sensor firmware's samples come from (the 'stream' line's source)
SENSOR_SOURCES: tuple[str, ...] = tuple(DEFINITION["sensor_source_values"])
# int16 values in one 'frames' line: the line stays within OUT_MAX_LINE (checked below)
FRAMES_MAX_VALUES: int = int(DEFINITION["frames_max_values"])
CAPTURE_MAX: int = 2 ** 31 - 1
ARG_MAX: int = 2 ** 31 - 1          # the magnitude of an int or count argument

CMD_NONE, CMD_INFO, CMD_RUN, CMD_INFER, CMD_RESET, CMD_BAD = "none", "info", "run", "infer", "reset", "bad"
CMD_LIVE, CMD_CAPTURE, CMD_STOP = "live", "capture", "stop"
# the trainable head's commands (firmware built with --trainable-head; others answer no_head)
HEAD_COMMANDS: tuple[str, ...] = ("head", "hclear", "hinit", "hput", "hadd", "htrain", "hweights", "hload", "hthr",
                                  "heval")
HEAD_VALUES_PER_LINE: int = int(DEFINITION["head_values_per_line"])
# Largest hput payload: "hput <offset> " + 2 hex digits per byte + " *xxxx" within CMD_MAX_LINE - 1
HPUT_MAX_PAYLOAD: int = (CMD_MAX_LINE - 1 - len("hput 65535 ") - len(CRC_SEP) - CRC_DIGITS) // 2


# --------------------------------------------------------------------------- checksum

def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (the C header runs the same bitwise loop)."""
    crc = CRC_INIT
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


assert crc16(b"123456789") == DEFINITION["checksum"]["check_123456789"], "CRC definition mismatch"


# --------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class Banner:
    version: int
    board: str
    device_id: int
    model_hash: str
    arena_bytes: int
    threshold: float
    threshold_origin: str
    n_test: int
    n_classes: int
    clock: str
    input: str = "windows"
    TYPE = "banner"


@dataclass(frozen=True)
class Sample:
    index: int
    pred: int
    label: int
    micros: int
    TYPE = "sample"


@dataclass(frozen=True)
class Summary:
    n: int
    correct: int
    tp: int
    fp: int
    tn: int
    fn: int
    lat_min: int
    lat_mean: int
    lat_p50: int
    lat_p95: int
    lat_max: int
    TYPE = "summary"


@dataclass(frozen=True)
class InferResult:
    pred: int
    scores: tuple[int, ...]
    micros: int
    TYPE = "infer"


@dataclass(frozen=True)
class HeadInfo:
    n_in: int
    n_hidden: int
    n_classes: int
    batch: int
    max_windows: int
    n_train: int
    n_val: int
    plan_bytes: int
    metric: str
    threshold: float
    TYPE = "head"


@dataclass(frozen=True)
class HeadWindow:
    index: int
    set: int
    label: int
    features: tuple[int, ...]
    TYPE = "hwin"


@dataclass(frozen=True)
class HeadEpoch:
    epoch: int
    steps: int
    loss: float
    micros: int
    TYPE = "hepoch"


@dataclass(frozen=True)
class HeadWeights:
    offset: int
    values: tuple[float, ...]
    TYPE = "hw"


@dataclass(frozen=True)
class HeadThreshold:
    threshold: float
    value: float
    n_val: int
    TYPE = "hthr"


@dataclass(frozen=True)
class HeadEval:
    set: int
    n: int
    correct: int
    tp: int
    fp: int
    tn: int
    fn: int
    TYPE = "heval"


@dataclass(frozen=True)
class Error:
    code: str
    detail: str
    TYPE = "error"


@dataclass(frozen=True)
class Ready:
    TYPE = "ready"


@dataclass(frozen=True)
class Stream:
    rate_hz: int
    channels: int
    window: int
    hop: int
    budget: int
    source: str
    scale: float
    unit: str
    TYPE = "stream"


@dataclass(frozen=True)
class Event:
    n: int
    pred: int
    score: float
    threshold: float
    micros: int
    TYPE = "event"


@dataclass(frozen=True)
class Beat:
    n: int
    pred: int
    dropped: int
    us_last: int
    us_max: int
    budget: int
    TYPE = "beat"


@dataclass(frozen=True)
class Frames:
    index: int
    count: int
    data: tuple[int, ...]     # int16 values, frame-major, channel-minor
    TYPE = "frames"


@dataclass(frozen=True)
class Gap:
    index: int
    count: int
    TYPE = "gap"


@dataclass(frozen=True)
class CaptureEnd:
    sent: int
    dropped: int
    TYPE = "capend"


@dataclass(frozen=True)
class ForeignBanner:
    """An intact banner of another protocol version: only ``v`` (its first field) is guaranteed
    by every version, so nothing else is read from it."""

    version: int
    TYPE = "banner"


HEAD_MESSAGES = (HeadInfo, HeadWindow, HeadEpoch, HeadWeights, HeadThreshold, HeadEval)
MESSAGE_CLASSES = {c.TYPE: c for c in (Banner, Sample, Summary, InferResult, Error, Ready, Stream,
                                        Event, Beat, Frames, Gap, CaptureEnd, *HEAD_MESSAGES)}
Message = (Banner | Sample | Summary | InferResult | Error | Ready | Stream | Event | Beat | Frames
           | Gap | CaptureEnd | HeadInfo | HeadWindow | HeadEpoch | HeadWeights | HeadThreshold
           | HeadEval | ForeignBanner)

for _t, _cls in MESSAGE_CLASSES.items():  # the dataclasses mirror the JSON definition exactly
    assert [f.name for f in fields(_cls)] == [f["name"] for f in MESSAGES[_t]["fields"]], _t


def to_dict(msg) -> dict:
    d = asdict(msg)
    d["type"] = msg.TYPE
    return d


# --------------------------------------------------------------------------- value syntax

_INT_RE = re.compile(r"-?(0|[1-9][0-9]{0,18})\Z")
_FIXED_RE = re.compile(r"(-?(0|[1-9][0-9]{0,12})\.[0-9]{6}|nan|inf|-inf)\Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
_INT8_RE = re.compile(r"(-?(0|[1-9][0-9]{0,2}))(,-?(0|[1-9][0-9]{0,2}))*\Z")
_CRC_RE = re.compile(rb"[0-9a-f]{4}\Z")
_HEX16_RE = re.compile(r"([0-9a-f]{4})*\Z")
_F32_RE = re.compile(r"[0-9a-f]{8}\Z")
_F32LIST_RE = re.compile(r"[0-9a-f]{8}(,[0-9a-f]{8})*\Z")
_F64_RE = re.compile(r"[0-9a-f]{16}\Z")


def f32_bits(v) -> str:
    """The binary32 bits of ``v`` (rounded to float32) as 8 lowercase hex digits."""
    return f"{int(np.array(v, np.float32).view(np.uint32)):08x}"


def f32_of(text: str) -> float:
    return float(np.array(int(text, 16), np.uint32).view(np.float32))


def f64_bits(v) -> str:
    return f"{int(np.array(float(v), np.float64).view(np.uint64)):016x}"


def f64_of(text: str) -> float:
    return float(np.array(int(text, 16), np.uint64).view(np.float64))


def _word(s) -> str:
    s = "" if s is None else str(s)
    return "".join(c if c in WORD_CHARS else "_" for c in s) or "_"


def _sha(s) -> str:
    return _word(s).lower()


def _text(s) -> str:
    s = "" if s is None else str(s)
    return "".join(c if (" " <= c <= "~" and c not in "@*") else "_" for c in s)


def _fixed6(v) -> str:
    """Fixed-point with 6 decimals exactly as the C header does it: the value is a C ``float``,
    scaled in double precision and rounded half away from zero; non-finite -> nan/inf/-inf."""
    d = float(np.float32(v))
    if math.isnan(d):
        return "nan"
    neg = d < 0
    d = abs(d)
    if not d < 9.0e12:
        return "-inf" if neg else "inf"
    s = int(math.floor(d * 1000000.0 + 0.5))
    ip, fp = divmod(s, 1000000)
    return f"{'-' if neg and s else ''}{ip}.{fp:06d}"


def _int8list(v) -> str:
    vals = [int(x) for x in np.asarray(v).reshape(-1)]
    for x in vals:
        if not -128 <= x <= 127:
            raise ValueError(f"score {x} is not int8")
    return ",".join(str(x) for x in vals)


def _hex16(v) -> str:
    """int16 values as 4 lowercase hex digits each, low byte first (the bytes of int16 LE)."""
    a = np.asarray(v).reshape(-1)
    if a.size and (a.min() < -32768 or a.max() > 32767):
        raise ValueError("frame value is not int16")
    return a.astype("<i2").tobytes().hex()


_FORMAT = {"int": lambda v: str(int(v)), "word": _word, "sha256": _sha, "fixed6": _fixed6,
           "int8list": _int8list, "text": _text, "hex16": _hex16, "f32hex": f32_bits,
           "f32hexlist": lambda v: ",".join(f32_bits(x) for x in np.asarray(v).reshape(-1)), "f64hex": f64_bits}


def _parse_value(typ: str, s: str):
    if typ == "int":
        return int(s) if _INT_RE.match(s) else None
    if typ == "word":
        return s if s and all(c in WORD_CHARS for c in s) else None
    if typ == "sha256":
        return s if _HASH_RE.match(s) else None
    if typ == "fixed6":
        return float(s) if _FIXED_RE.match(s) else None
    if typ == "int8list":
        if s == "":
            return ()
        if not _INT8_RE.match(s):
            return None
        vals = tuple(int(x) for x in s.split(","))
        return vals if all(-128 <= x <= 127 for x in vals) else None
    if typ == "text":
        return s if all(" " <= c <= "~" and c not in "@*" for c in s) else None
    if typ == "hex16":
        if not _HEX16_RE.match(s):
            return None
        return tuple(int(x) for x in np.frombuffer(bytes.fromhex(s), dtype="<i2"))
    if typ == "f32hex":
        return f32_of(s) if _F32_RE.match(s) else None
    if typ == "f32hexlist":
        if s == "":
            return ()
        return tuple(f32_of(x) for x in s.split(",")) if _F32LIST_RE.match(s) else None
    if typ == "f64hex":
        return f64_of(s) if _F64_RE.match(s) else None
    raise ValueError(typ)


# --------------------------------------------------------------------------- device side (format)

def _defaults(msg_type: str) -> dict:
    """Fields a message class gives a default (the banner's ``input``: "windows")."""
    return {f.name: f.default for f in fields(MESSAGE_CLASSES[msg_type])
            if f.default is not MISSING}


def format_message(msg_type: str, **values) -> str:
    """One complete device line (ending in '\\n') of ``msg_type`` with field values by name (a field
    left out takes its message class' default, if it has one)."""
    spec = MESSAGES[msg_type]["fields"]
    values = {**_defaults(msg_type), **values}
    parts = [START + msg_type]
    for f in spec:
        parts.append(f"{f['key']}={_FORMAT[f['type']](values[f['name']])}")
    body = " ".join(parts)
    return f"{body}{CRC_SEP}{crc16(body.encode('ascii')):04x}\n"


def format_banner(board: str, device_id: int, model_hash: str, arena_bytes: int, threshold: float,
                  n_test: int, n_classes: int, clock: str = "device",
                  version: int = PROTOCOL_VERSION, *, threshold_origin: str,
                  input: str = "windows") -> str:
    return format_message("banner", version=version, board=board, device_id=device_id,
                          model_hash=model_hash, arena_bytes=arena_bytes, threshold=threshold,
                          threshold_origin=threshold_origin, n_test=n_test, n_classes=n_classes,
                          clock=clock, input=input)


def format_sample(index: int, pred: int, label: int, micros: int) -> str:
    return format_message("sample", index=index, pred=pred, label=label, micros=micros)


def format_summary(n, correct, tp, fp, tn, fn, lat_min, lat_mean, lat_p50, lat_p95, lat_max) -> str:
    return format_message("summary", n=n, correct=correct, tp=tp, fp=fp, tn=tn, fn=fn,
                          lat_min=lat_min, lat_mean=lat_mean, lat_p50=lat_p50, lat_p95=lat_p95,
                          lat_max=lat_max)


def format_infer(pred: int, scores, micros: int) -> str:
    return format_message("infer", pred=pred, scores=scores, micros=micros)


def format_error(code: str, detail: str) -> str:
    return format_message("error", code=code, detail=detail)


def format_ready() -> str:
    return format_message("ready")


def format_stream(rate_hz: int, channels: int, window: int, hop: int, budget: int, source: str,
                  scale: float, unit: str) -> str:
    return format_message("stream", rate_hz=rate_hz, channels=channels, window=window, hop=hop,
                          budget=budget, source=source, scale=scale, unit=unit)


def format_event(n: int, pred: int, score: float, threshold: float, micros: int) -> str:
    return format_message("event", n=n, pred=pred, score=score, threshold=threshold, micros=micros)


def format_beat(n: int, pred: int, dropped: int, us_last: int, us_max: int, budget: int) -> str:
    return format_message("beat", n=n, pred=pred, dropped=dropped, us_last=us_last, us_max=us_max,
                          budget=budget)


def format_frames(index: int, data) -> str:
    """One 'frames' line of int16 frames ``data`` (n, C) starting at frame ``index``; at most
    ``frames_per_line(C)`` frames."""
    a = np.asarray(data)
    if a.ndim != 2 or a.size > FRAMES_MAX_VALUES:
        raise ValueError(f"frames: (n, C) with n * C <= {FRAMES_MAX_VALUES} values")
    return format_message("frames", index=index, count=a.shape[0], data=a)


def format_gap(index: int, count: int) -> str:
    return format_message("gap", index=index, count=count)


def format_capend(sent: int, dropped: int) -> str:
    return format_message("capend", sent=sent, dropped=dropped)


def frames_per_line(channels: int) -> int:
    """Frames of ``channels`` int16 values in one 'frames' line: FRAMES_MAX_VALUES // channels."""
    return FRAMES_MAX_VALUES // max(int(channels), 1)


# the longest 'frames' line fits the device's line buffer (with its NUL)
assert len(format_message("frames", index=-2 ** 31, count=FRAMES_MAX_VALUES,
                          data=np.zeros(FRAMES_MAX_VALUES, np.int16))) < OUT_MAX_LINE


# --------------------------------------------------------------------------- host side (parse)

def parse_line(line: bytes | str) -> Message | None:
    """The typed message of one received line, or None for noise / corrupted / unknown lines."""
    raw = line.encode("latin-1", errors="replace") if isinstance(line, str) else bytes(line)
    at = raw.rfind(START.encode())
    if at < 0:
        return None
    frame = raw[at:].rstrip(b"\r\n")
    n = len(CRC_SEP) + CRC_DIGITS
    if len(frame) < n + 2 or frame[-n:-CRC_DIGITS] != CRC_SEP.encode():
        return None
    crc_txt, body = frame[-CRC_DIGITS:], frame[:-n]
    if not _CRC_RE.match(crc_txt) or crc16(body) != int(crc_txt, 16):
        return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not all(" " <= c <= "~" for c in text):
        return None
    msg_type, _, rest = text[len(START):].partition(" ")
    if msg_type not in MESSAGES:
        return None
    spec = MESSAGES[msg_type]["fields"]
    tokens = rest.split(" ", len(spec) - 1) if spec else ([] if rest == "" else [rest])
    if msg_type == "banner" and tokens and tokens[0].startswith("v="):
        v = _parse_value("int", tokens[0][2:])
        if v is not None and v != PROTOCOL_VERSION:
            return ForeignBanner(v)
    if len(tokens) != len(spec) or (not spec and rest):
        return None
    values = {}
    for tok, f in zip(tokens, spec):
        key, eq, val = tok.partition("=")
        if key != f["key"] or not eq:
            return None
        parsed = _parse_value(f["type"], val)
        if parsed is None:
            return None
        values[f["name"]] = parsed
    if msg_type == "frames" and (values["count"] < 0 or len(values["data"]) > FRAMES_MAX_VALUES or (
            len(values["data"]) % values["count"] if values["count"] else values["data"])):
        return None     # the values must split into `count` whole frames
    return MESSAGE_CLASSES[msg_type](**values)


# --------------------------------------------------------------------------- commands

ARG_KIND_CHARS = {"int": "i", "count": "n", "f32hex": "x"}   # the C parser's argument kinds


def _arg_kinds(name: str) -> str:
    """A command's argument kinds as the C string ft__parse_args reads ('i', 'n', 'x' each)."""
    return _c_str("".join(ARG_KIND_CHARS[a["type"]] for a in COMMANDS[name].get("args", [])))


def _arg_text(typ: str, v) -> str:
    if typ == "int":
        return str(int(v))
    if typ == "count":
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= CAPTURE_MAX:
            raise ValueError(f"a count must be an int 0 <= N <= {CAPTURE_MAX}, got {v!r}")
        return str(int(v))
    if typ == "f32hex":
        return f32_bits(v)
    raise ValueError(typ)


def encode_command(name: str, payload=None, checksum: bool = True, args=()) -> bytes:
    """The bytes the host writes for a command (``payload``: int8 array-like or bytes for infer
    and hput, or the frame count N >= 0 for capture; ``args``: the values of the command's ``args`` in order, e.g. hadd's set, label, crc).

    The host always appends `` *crc`` (CRC-16 of the bytes before it); a device also accepts a
    command without it, so a person can type ``info`` in a serial monitor."""
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    text = name
    spec = COMMANDS[name].get("args", [])
    if name == CMD_CAPTURE and payload is not None and not args:   # encode_command("capture", N)
        args, payload = (payload,), None
    if len(args) != len(spec):
        raise ValueError(f"{name} takes {len(spec)} argument(s), got {len(args)}")
    for a, v in zip(spec, args):
        text += " " + _arg_text(a["type"], v)
    if COMMANDS[name]["payload"]:
        if payload is None:
            raise ValueError(f"{name} needs a payload")
        data = payload if isinstance(payload, (bytes, bytearray)) else \
            np.asarray(payload).astype(np.int8).tobytes()
        cap = HPUT_MAX_PAYLOAD if name in ("hput", "hload") else INFER_MAX_PAYLOAD
        if not data:
            raise ValueError(f"empty {name} payload")
        if len(data) > cap:
            raise ValueError(f"{name} payload of {len(data)} bytes exceeds {cap}")
        text += " " + bytes(data).hex()
    elif payload is not None:
        raise ValueError(f"{name} takes no payload")
    if checksum:
        text += f"{CRC_SEP}{crc16(text.encode('ascii')):04x}"
    return (text + "\n").encode("ascii")


@dataclass(frozen=True)
class Command:
    type: str                 # CMD_NONE / CMD_INFO / CMD_RUN / CMD_INFER / CMD_RESET / CMD_LIVE /
    #                           CMD_CAPTURE / CMD_STOP / CMD_BAD, or a HEAD_COMMANDS word
    payload: bytes = b""
    error: str | None = None  # an ERROR_CODES key when type == CMD_BAD
    count: int = 0            # capture: frames to send (0 = until stop)
    args: tuple = ()          # a head command's arguments (int, or float for f32hex)


def parse_command(line: bytes | str, payload_cap: int = INFER_MAX_PAYLOAD) -> Command:
    """Python mirror of ``ft_parse_command_ex`` in the C header (the emulator uses it).
    ``line`` is one command line with or without its final newline."""
    raw = line.encode("latin-1", errors="replace") if isinstance(line, str) else bytes(line)
    if raw.endswith(b"\n"):
        raw = raw[:-1]          # the firmware's line reader hands over the line without it
    if len(raw) > CMD_MAX_LINE:
        return Command(CMD_BAD, error="too_long")
    s = raw.rstrip(b"\r\n \t").lstrip(b" \t")
    if not s:
        return Command(CMD_NONE)
    if len(s) > CMD_MAX_LINE - 1:
        return Command(CMD_BAD, error="too_long")
    n = len(CRC_SEP) + CRC_DIGITS
    if len(s) > n and s[-n:-CRC_DIGITS] == CRC_SEP.encode() and re.fullmatch(rb"[0-9a-fA-F]{4}", s[-CRC_DIGITS:]):
        if crc16(s[:-n]) != int(s[-CRC_DIGITS:], 16):
            return Command(CMD_BAD, error="bad_crc")
        s = s[:-n]
    word, _, rest = s.partition(b" ")
    word = word.lower()
    rest = rest.lstrip(b" ")
    for name in (CMD_INFO, CMD_RUN, CMD_RESET, CMD_LIVE, CMD_STOP):
        if word == name.encode():
            return Command(name) if not rest else Command(CMD_BAD, error="bad_cmd")
    if word == CMD_CAPTURE.encode():
        c = _parse_args(CMD_CAPTURE, rest, payload_cap)
        return c if c.type == CMD_BAD else Command(CMD_CAPTURE, count=c.args[0])
    if word == CMD_INFER.encode():
        if not rest or len(rest) % 2 or not re.fullmatch(rb"[0-9a-fA-F]+", rest):
            return Command(CMD_BAD, error="bad_payload")
        if len(rest) // 2 > payload_cap:
            return Command(CMD_BAD, error="too_long")
        return Command(CMD_INFER, bytes.fromhex(rest.decode("ascii")))
    if word.decode("ascii", "replace") in HEAD_COMMANDS:
        return _parse_args(word.decode("ascii"), rest, payload_cap)
    return Command(CMD_BAD, error="bad_cmd")


# an argument of each type: int (-2^31+1 .. 2^31-1), count (0 .. 2^31-1; leading zeros allowed, as a
# person types them), f32hex (8 hex digits); a value over 2^31 - 1 is bad_args
_ARG_RE = {"int": re.compile(rb"-?[0-9]{1,10}\Z"), "count": re.compile(rb"[0-9]{1,10}\Z"),
           "f32hex": re.compile(rb"[0-9a-fA-F]{8}\Z")}


def _parse_args(name: str, rest: bytes, payload_cap: int) -> Command:
    """A command's typed arguments (protocol.json ``args``; mirror of ``ft__parse_args`` in the C
    header): space-separated int / count / f32hex, then for hput and hload the hex payload."""
    spec = COMMANDS[name].get("args", [])
    tokens = rest.split(b" ") if rest else []
    tokens = [t for t in tokens if t]
    n_payload = 1 if COMMANDS[name]["payload"] else 0
    if len(tokens) != len(spec) + n_payload:
        return Command(CMD_BAD, error="bad_args")
    args = []
    for a, tok in zip(spec, tokens):
        if not _ARG_RE[a["type"]].match(tok) or (a["type"] != "f32hex" and abs(int(tok)) > ARG_MAX):
            return Command(CMD_BAD, error="bad_args")
        args.append(int(tok) if a["type"] != "f32hex" else f32_of(tok.decode("ascii").lower()))
    payload = b""
    if n_payload:
        hexs = tokens[-1]
        if len(hexs) % 2 or not re.fullmatch(rb"[0-9a-fA-F]+", hexs):
            return Command(CMD_BAD, error="bad_payload")
        if len(hexs) // 2 > payload_cap:
            return Command(CMD_BAD, error="too_long")
        payload = bytes.fromhex(hexs.decode("ascii"))
    return Command(name, payload, args=tuple(args))


# --------------------------------------------------------------------------- shared arithmetic

def latency_summary(micros: Iterable[int]) -> tuple[int, int, int, int, int]:
    """(min, mean, p50, p95, max) in integer microseconds, as the firmware computes them:
    mean rounded half up, percentiles by nearest rank (sorted[ceil(p*n/100) - 1]); zeros if empty."""
    us = sorted(int(u) for u in micros)
    n = len(us)
    if n == 0:
        return (0, 0, 0, 0, 0)

    def rank(p: int) -> int:
        return us[max((p * n + 99) // 100, 1) - 1]

    return (us[0], (sum(us) + n // 2) // n, rank(50), rank(95), us[-1])


def confusion(preds: Iterable[int], labels: Iterable[int]) -> dict:
    """n, correct (pred == label) and the binary fault-detection counts (positive = label != 0)."""
    c = dict(n=0, correct=0, tp=0, fp=0, tn=0, fn=0)
    for p, y in zip(preds, labels):
        c["n"] += 1
        c["correct"] += int(p == y)
        key = ("tp" if p != 0 else "fn") if y != 0 else ("fp" if p != 0 else "tn")
        c[key] += 1
    return c


def fault_score(q0: int, output_scale: float, output_zero_point: int) -> float:
    """The decision score an 'event' line reports: the fault probability 1 - p0 of the int8 class-0
    output code q0, p0 = scale * (q0 - zp), in double precision, then as a C float (the board's
    ``(float)(1.0 - scale * (q0 - zp))``); a window is a fault iff score >= threshold."""
    return float(np.float32(1.0 - float(output_scale) * (int(q0) - int(output_zero_point))))


def fault_q0_max(threshold: float, output_scale: float, output_zero_point: int) -> int:
    """The integer form of the threshold rule for ``ft_decide_q``: a window is a fault iff its
    int8 output code of class 0 is <= this value (-129: never a fault). Found by evaluating the
    trainer's own rule (``decide`` on ``dequantize``) on all 256 codes, so the firmware's
    decision cannot drift from the host's through float rounding."""
    from fedtiny.trainer.threshold import decide, dequantize

    codes = np.arange(-128, 128, dtype=np.int64)
    p0 = dequantize(codes, output_scale, output_zero_point)
    probs = np.stack([p0, np.zeros_like(p0), np.zeros_like(p0)], axis=1)
    fault = decide(probs, threshold) != 0
    idx = np.flatnonzero(fault)
    if len(idx) == 0:
        return -129
    cut = int(codes[idx[-1]])
    if not np.array_equal(fault, codes <= cut):
        raise ValueError("threshold rule is not monotone in the class-0 code (output scale <= 0?)")
    return cut


# --------------------------------------------------------------------------- C header

def _c_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return '"' + "".join(out) + '"'


def header_context() -> dict:
    """Values the C header template renders (all derived from protocol.json)."""
    msgs = {}
    for t, m in MESSAGES.items():
        msgs[t] = {"tag": _c_str(START + t),
                   "key": {f["name"]: _c_str(" " + f["key"] + "=") for f in m["fields"]}}
    word_extra = "".join(sorted(c for c in WORD_CHARS if not c.isalnum()))
    return {
        "version": PROTOCOL_VERSION,
        "cmd_max_line": CMD_MAX_LINE,
        "out_max_line": OUT_MAX_LINE,
        "infer_max_payload": INFER_MAX_PAYLOAD,
        "baud": DEFAULT_BAUD,
        "crc_poly": f"0x{CRC_POLY:04X}u",
        "crc_init": f"0x{CRC_INIT:04X}u",
        "crc_sep": _c_str(CRC_SEP),
        "start": f"'{START}'",
        "word_extra": _c_str(word_extra),
        "msg": msgs,
        "cmd": {name: _c_str(name) for name in COMMANDS},
        "head_cmds": [{"word": _c_str(name), "enum": f"FT_HCMD_{name.upper()}", "args": _arg_kinds(name),
                       "payload": int(bool(COMMANDS[name]["payload"]))} for name in HEAD_COMMANDS],
        "capture_args": _arg_kinds(CMD_CAPTURE),
        "head_values_per_line": HEAD_VALUES_PER_LINE,
        "errors": [(f"FT_ERR_{code.upper()}", _c_str(code), doc) for code, doc in ERROR_CODES.items()],
        "clocks": [(f"FT_CLOCK_{c.upper()}", _c_str(c)) for c in CLOCKS],
        "threshold_origins": [(f"FT_THR_FROM_{o.upper()}", _c_str(o)) for o in THRESHOLD_ORIGINS],
        "inputs": [(f"FT_INPUT_{o.upper()}", _c_str(o)) for o in INPUTS],
        "sources": [(f"FT_SOURCE_{o.upper()}", _c_str(o)) for o in SENSOR_SOURCES],
        "frames_max_values": FRAMES_MAX_VALUES,
    }


def render_c_header() -> str:
    """``fedtiny_protocol.h``: header-only (static inline), Arduino-free, C99 / C++11."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("fedtiny_protocol.h.j2").render(**header_context())
