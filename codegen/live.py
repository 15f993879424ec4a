"""Sensor input for a firmware (``fedtiny build --input sensor``): what the live firmware samples,
how often it classifies, and the files that add it to a compiled-runtime project.

The stream (``LiveSpec``) comes from the run: the model's rate (device.json ``frontend.rate_hz``),
channels and window; the hop is an option (default: half the window). Its budget is the hop's
duration in the board's clock unit: ``hop / rate`` seconds, in microseconds (clock=device) or in
instructions (clock=icount: QEMU -icount shift=0 retires one instruction per virtual nanosecond).

The source is the board's ``sensor`` section (boards/*.json) or ``--sensor``: ``sim`` (qemu-m4:
a recording embedded in flash, played by the board's sampling timer), ``imu``, ``adc`` or ``user``.
A sensor that the board file does not offer, or a rate it cannot give, is a CodegenError.

Files added to the project (``live_files``):

    include/ft_live_config.h   rate, channels, window, hop, budget, source, scale, unit
    include/ft_sensor.h        the sensor interface (ft_sensor_begin / ft_sensor_read)
    include/ft_stream.h, src/ft_stream.c   the sample FIFO the timer fills
    include/ft_live.h, src/ft_live.c       the live and capture commands (every runtime)
    src/ft_sensor_sim.c, include/sensor_recording.h, src/sensor_recording.c   (sim only)
    src/ft_sensor_user.c       (user only: the one commented file to fill in, weak defaults)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.firmware import protocol as P

from .boards import Board
from .errors import CodegenError
from .render import c_float, c_string, rows

# clock unit per second of each banner clock label (the budget's unit)
CLOCK_UNITS_PER_S = {"device": 1_000_000, "icount": 1_000_000_000}
MAX_RECORDING_FRAMES = 1 << 20
MAX_CHANNELS = 16            # ft_stream.c's scratch frame


@dataclass(frozen=True)
class LiveSpec:
    """What a live firmware samples and when it classifies (the ``stream`` line's fields)."""

    rate_hz: int
    channels: int
    window: int
    hop: int
    budget: int          # the hop's duration in the board's clock unit
    source: str          # imu / adc / user / sim
    scale: float         # physical units per count
    unit: str
    full_scale: tuple = ()          # imu: per channel, the physical value the model sees as 1.0
    revision: str | None = None     # imu: the board revision (its IMU chip and library)


def sensor_section(board: Board) -> dict:
    """The board file's ``sensor`` section: ``{"sources": {name: {...}}, "default": name}``."""
    sec = board.data.get("sensor")
    if not isinstance(sec, dict) or not isinstance(sec.get("sources"), dict) or not sec["sources"]:
        raise CodegenError(f"board {board.name} has no sensor section: it cannot be built with --input sensor")
    for name in sec["sources"]:
        if name not in P.SENSOR_SOURCES:
            raise CodegenError(f"board {board.name} names an unknown sensor {name!r} "
                               f"(known: {', '.join(P.SENSOR_SOURCES)})")
    return sec


def rate_of(info: dict) -> float:
    """The model's sample rate from device.json's front end entry (every kind records it)."""
    try:
        rate = float((info.get("frontend") or {})["rate_hz"])
    except (KeyError, TypeError, ValueError):
        raise CodegenError("device.json records no sample rate (frontend.rate_hz): retrain with this "
                           "fedtiny version to build sensor input") from None
    if not np.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise CodegenError(f"the model's sample rate {rate!r} Hz is not a positive whole number of Hz")
    return rate


def check_rate(board: Board, source: str, src: dict, rate: int) -> None:
    """A rate the sensor cannot give is a CodegenError naming both."""
    lo, hi = src.get("min_rate_hz"), src.get("max_rate_hz")
    if (lo is not None and rate < int(lo)) or (hi is not None and rate > int(hi)):
        raise CodegenError(f"the {source} sensor of {board.name} gives {lo}..{hi} Hz, the model needs {rate} Hz")
    div = src.get("timer_clock_hz")
    if div is not None and int(div) % rate != 0:
        raise CodegenError(f"the sampling timer of {board.name} ({int(div):,} Hz clock) cannot give exactly "
                           f"{rate} Hz (it must divide the clock)")


def imu_revision(board: Board, source: str, src: dict, revision: str | None) -> str | None:
    """The board revision a sensor needs (its ``revisions``: the Nano 33 BLE's rev1 LSM9DS1 and
    rev2 BMI270 + BMM150 need different libraries), or None for a sensor without revisions. Its
    absence, an unknown one, or one given for a sensor without revisions is a CodegenError."""
    revs = src.get("revisions") or {}
    if not revs:
        if revision is not None:
            raise CodegenError(f"--board-revision is for a sensor with board revisions; the {source} sensor of "
                               f"{board.name} has none")
        return None
    names = ", ".join(f"{k} ({v.get('chip', '?')})" for k, v in revs.items())
    if revision is None:
        raise CodegenError(f"the {source} sensor of {board.name} depends on the board revision: add "
                           f"--board-revision with one of {names}")
    if revision not in revs:
        raise CodegenError(f"unknown --board-revision {revision!r} for {board.name} (revisions: {names})")
    return str(revision)


def live_spec(board: Board, info: dict, window: int, channels: int, hop: int | None,
              source: str | None, revision: str | None = None) -> LiveSpec:
    """The stream of device ``info``'s model on ``board``; hop defaults to half the window;
    ``revision``: the board revision of a sensor that depends on it (``imu_revision``)."""
    sec = sensor_section(board)
    source = str(source or sec.get("default") or next(iter(sec["sources"])))
    if source not in P.SENSOR_SOURCES:
        raise CodegenError(f"unknown sensor {source!r} (sensors: {', '.join(P.SENSOR_SOURCES)})")
    if source not in sec["sources"]:
        raise CodegenError(f"board {board.name} has no {source} sensor (its sensors: {', '.join(sec['sources'])})")
    src = sec["sources"][source]
    rate = int(rate_of(info))
    check_rate(board, source, src, rate)
    revision = imu_revision(board, source, src, revision)
    hop = max(1, window // 2) if hop is None else int(hop)
    if not 1 <= hop <= window:
        raise CodegenError(f"--hop must be 1..{window} samples (the window), got {hop}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise CodegenError(f"live input takes 1..{MAX_CHANNELS} channels, the model has {channels}")
    max_ch = src.get("max_channels")
    if max_ch is not None and channels > int(max_ch):
        raise CodegenError(f"the {source} sensor of {board.name} gives at most {max_ch} channels, the model "
                           f"needs {channels}")
    per_s = CLOCK_UNITS_PER_S.get(board.clock, 1_000_000)
    budget = hop * per_s // rate
    scale, unit = float(src.get("scale", 1.0 / 32767)), str(src.get("unit", "model"))
    cs = [float(v) for v in (info.get("channel_scale") or [])]
    if source == "sim" and len(set(cs)) > 1:
        # the recording's counts are model units x 32767, i.e. channel c's physical value is
        # count * channel_scale[c] / 32767; one stream scale cannot say that: channel 0's, unit=mixed
        scale, unit = cs[0] / 32767.0, "mixed"
    full_scale: tuple = ()
    if source == "imu":
        full_scale = imu_full_scale(board, cs, int(channels))
        # a count is full_scale[c] / 32767 of channel c's unit (g for 0-2, deg/s for 3-5)
        scale = full_scale[0] / 32767.0
        if int(channels) > 3 or len(set(full_scale)) > 1:
            unit = "mixed"
    return LiveSpec(rate, int(channels), int(window), hop, int(budget), source, scale, unit, full_scale, revision)


def imu_full_scale(board: Board, channel_scale: list[float], channels: int) -> tuple:
    """Per channel, the IMU reading the model sees as 1.0: device.json ``channel_scale`` (in g for
    channels 0-2, degrees/s for 3-5), or 1.0 each when the run records none."""
    if channels not in (3, 6):
        raise CodegenError(f"the imu sensor of {board.name} gives 3 channels (acceleration x, y, z) or 6 (then "
                           f"angular rate x, y, z); the model has {channels}")
    fs = tuple(channel_scale) if channel_scale else (1.0,) * channels
    if len(fs) != channels or not all(np.isfinite(v) and v > 0 for v in fs):
        raise CodegenError(f"device.json channel_scale must be {channels} positive numbers for the imu sensor, "
                           f"got {list(channel_scale)}")
    return tuple(float(v) for v in fs)


def recording_from_run(x: np.ndarray, raw_int16: np.ndarray | None) -> np.ndarray:
    """The default sim recording: the run's test windows one after another, as int16 counts
    (the front end's samples, or ``fedtiny.frontend.to_int16`` of the model-unit windows)."""
    from fedtiny import frontend as fe

    s = raw_int16 if raw_int16 is not None else fe.to_int16(x)
    s = np.asarray(s, np.int16)
    return s.reshape(-1, s.shape[-1])


def load_recording(path: Path, channels: int) -> np.ndarray:
    """An int16 (N, channels) ``.npy`` recording (e.g. written by firmware/simsensor.py)."""
    try:
        a = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CodegenError(f"cannot read recording {path}: {e}") from None
    if a.dtype != np.int16 or a.ndim != 2 or a.shape[1] != channels or not 0 < len(a) <= MAX_RECORDING_FRAMES:
        raise CodegenError(f"recording {path} must be int16 (N, {channels}) counts with 1..{MAX_RECORDING_FRAMES} "
                           f"frames, got {a.dtype} {a.shape}")
    return a


def sensor_defines(spec: LiveSpec, src: dict) -> list[str]:
    """The sensor's own defines: the IMU's library header and full scales, the ADC's pins,
    attenuation and code-to-count rule (boards/*.json)."""
    if spec.source == "imu":
        rev = src["revisions"][spec.revision]
        return [f"/* {spec.revision}: {rev['chip']} through {rev['lib_deps']} */",
                f"#define FT_IMU_HEADER <{rev['header']}>",
                "/* per channel: the reading (g, deg/s) the model sees as 1.0 (device.json channel_scale) */",
                "#define FT_SENSOR_FULL_SCALE {" + ", ".join(repr(float(v)) for v in spec.full_scale) + "}"]
    if spec.source == "adc":
        pins = [int(p) for p in src["pins"][:spec.channels]]
        return [f"/* ADC1 pins in the model's channel order, {src['attenuation']} each */",
                "#define FT_ADC_PINS {" + ", ".join(str(p) for p in pins) + "}",
                f"#define FT_ADC_ATTENUATION {src['attenuation']}",
                f"#define FT_ADC_ZERO_CODE {int(src['zero_code'])}L",
                f"#define FT_ADC_COUNTS_PER_CODE {int(src['counts_per_code'])}L"]
    return []


def config_header(spec: LiveSpec, src: dict | None = None) -> str:
    return "\n".join([
        "/* ft_live_config.h: what the live firmware samples (GENERATED by fedtiny build --input sensor; "
        "do not edit). */",
        "#ifndef FT_LIVE_CONFIG_H", "#define FT_LIVE_CONFIG_H", "",
        f"#define FT_LIVE_RATE_HZ {spec.rate_hz}L", f"#define FT_LIVE_CHANNELS {spec.channels}",
        f"#define FT_LIVE_WINDOW {spec.window}", f"#define FT_LIVE_HOP {spec.hop}",
        f"/* the hop's duration ({spec.hop} / {spec.rate_hz} s) in the banner's clock unit */",
        f"#define FT_LIVE_BUDGET {spec.budget}LL",
        f"#define FT_SENSOR_SOURCE FT_SOURCE_{spec.source.upper()}",
        f"#define FT_SENSOR_SCALE {c_float(spec.scale)}", f"#define FT_SENSOR_UNIT {c_string(spec.unit)}",
        *sensor_defines(spec, src or {}), "", "#endif  /* FT_LIVE_CONFIG_H */", ""])


def recording_files(rec: np.ndarray) -> dict[str, str]:
    n, c = rec.shape
    h = ["/* sensor_recording.h: the simulated sensor's recording (GENERATED by fedtiny build). */",
         "#ifndef SENSOR_RECORDING_H", "#define SENSOR_RECORDING_H", "#include <stdint.h>",
         f"#define FT_RECORDING_FRAMES {n}L", f"#define FT_RECORDING_CHANNELS {c}",
         "extern const int16_t g_ft_recording[];", "#endif", ""]
    src = ["/* sensor_recording.c: int16 counts, frame-major, channel-minor (GENERATED by fedtiny build). */",
           '#include "sensor_recording.h"', f"const int16_t g_ft_recording[{n * c}] = {{"]
    src += [f"  {r}" for r in rows(rec.reshape(-1).tolist(), str)] + ["};", ""]
    return {"include/sensor_recording.h": "\n".join(h), "src/sensor_recording.c": "\n".join(src)}


ARDUINO_SENSOR_FILES = {"imu": "ft_sensor_imu.cpp", "adc": "ft_sensor_adc.cpp"}


def lib_deps(board: Board, spec: LiveSpec) -> list[str]:
    """The PlatformIO library a sensor needs (the IMU library of the board revision, pinned)."""
    if spec.source != "imu":
        return []
    return [str(sensor_section(board)["sources"]["imu"]["revisions"][spec.revision]["lib_deps"])]


def live_files(spec: LiveSpec, recording: np.ndarray | None, board: Board | None = None) -> dict[str, str]:
    """The files sensor input adds to a project (either runtime); a PlatformIO ``board`` also gets
    the Arduino sampling timer and its sensor's Arduino code."""
    from .compiled.project import firmware_dir

    fw = firmware_dir()
    src = sensor_section(board)["sources"][spec.source] if board is not None else {}
    files = {"include/ft_live_config.h": config_header(spec, src),
             "include/ft_sensor.h": (fw / "compiled" / "ft_sensor.h").read_text(),
             "include/ft_stream.h": (fw / "compiled" / "ft_stream.h").read_text(),
             "src/ft_stream.c": (fw / "compiled" / "ft_stream.c").read_text(),
             "include/ft_live.h": (fw / "compiled" / "ft_live.h").read_text(),
             "src/ft_live.c": (fw / "compiled" / "ft_live.c").read_text()}
    if spec.source == "sim":
        if recording is None:
            raise CodegenError("the sim sensor needs a recording")
        files["src/ft_sensor_sim.c"] = (fw / "sensors" / "ft_sensor_sim.c").read_text()
        files.update(recording_files(recording))
    elif spec.source == "user":
        files["src/ft_sensor_user.c"] = (fw / "sensors" / "ft_sensor_user.c").read_text()
    if board is not None and board.uses_platformio:
        files["src/ft_sampler_arduino.cpp"] = (fw / "arduino" / "ft_sampler_arduino.cpp").read_text()
        files["include/ft_board.h"] = (fw / "compiled" / "ft_board.h").read_text()
        files["src/ft_board_arduino.cpp"] = (fw / "arduino" / "ft_board_arduino.cpp").read_text()
        if spec.source in ARDUINO_SENSOR_FILES:
            name = ARDUINO_SENSOR_FILES[spec.source]
            files[f"src/{name}"] = (fw / "sensors" / name).read_text()
    elif spec.source in ARDUINO_SENSOR_FILES:
        raise CodegenError(f"the {spec.source} sensor is read by Arduino code: it needs a PlatformIO board")
    return files


def check_budget(spec: LiveSpec, worst: int, how: str, unit: str, also: str = "") -> None:
    """Refuse a firmware whose inference (front end + model, ``worst`` in the board's clock unit)
    does not fit the hop: it could never keep up with its sensor. ``also``: a further remedy,
    appended to the message."""
    if worst > spec.budget:
        raise CodegenError(f"inference takes {worst:,} {unit} ({how}) but a hop of {spec.hop} samples at "
                           f"{spec.rate_hz} Hz lasts {spec.budget:,} {unit}: use a larger --hop or a smaller "
                           f"model{also}")

