"""Protocol v3's live and capture messages and commands: the C header and Python agree byte for byte.

The g++ program renders every new ft_format_* call and parses every new command through the
header's line reader; Python formats and parses the same (the host parser reads each line back).
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fedtiny.firmware import protocol as P

HASH = "ad9ec22a6895da6d2c73f4746bc49dd1962bd246a2d2eeb8d655ed6b14df1c2d"
# ft_cmd_type_t's values (FT_CMD_BAD stays 5: v2 firmware code compares against it)
ENUM = {P.CMD_NONE: 0, P.CMD_INFO: 1, P.CMD_RUN: 2, P.CMD_INFER: 3, P.CMD_RESET: 4, P.CMD_BAD: 5,
        P.CMD_LIVE: 6, P.CMD_CAPTURE: 7, P.CMD_STOP: 8}


def test_live_messages_python():
    data = np.array([[1, -2, 300], [32767, -32768, 0]], np.int16)
    line = P.format_frames(5, data)
    assert line.startswith("@frames i=5 n=2 data=0100feff2c01ff7f00800000 *")
    assert P.parse_line(line) == P.Frames(5, 2, (1, -2, 300, 32767, -32768, 0))
    assert P.parse_line(P.format_frames(0, np.zeros((0, 3), np.int16))) == P.Frames(0, 0, ())
    big = np.full((P.frames_per_line(6), 6), -32768, np.int16)
    assert len(P.format_frames(2 ** 40, big)) <= P.OUT_MAX_LINE
    with pytest.raises(ValueError):
        P.format_frames(0, np.zeros((P.frames_per_line(6) + 1, 6), np.int16))
    with pytest.raises(ValueError):
        P.format_frames(0, np.array([[40000]]))

    def frame(body: str) -> str:
        return f"{body} *{P.crc16(body.encode()):04x}\n"
    for bad in ("@frames i=0 n=2 data=010002", "@frames i=0 n=2 data=0100020003",   # 3 values in 2 frames
                "@frames i=0 n=0 data=0100", "@frames i=0 n=1 data=01FF", "@frames i=0 n=-1 data=",
                "@gap i=1", "@capend n=1 dropped=x", "@event n=1 pred=0 score=0.5 thr=0.500000 us=1"):
        assert P.parse_line(frame(bad)) is None, bad
    s = P.parse_line(P.format_stream(2000, 3, 256, 128, 3200000, "sim", 1 / 32767, "g"))
    assert s == P.Stream(2000, 3, 256, 128, 3200000, "sim", 0.000031, "g")
    assert P.parse_line(P.format_event(384, 2, 0.75, 0.5, 123)) == P.Event(384, 2, 0.75, 0.5, 123)
    assert P.parse_line(P.format_beat(2000, 0, 3, 1, 2, 3)) == P.Beat(2000, 0, 3, 1, 2, 3)
    assert P.parse_line(P.format_gap(7, 3)) == P.Gap(7, 3)
    assert P.parse_line(P.format_capend(100, 2)) == P.CaptureEnd(100, 2)
    b = P.parse_line(P.format_banner("b", 1, HASH, 1, 0.5, 0, 3, threshold_origin="local", input="sensor"))
    assert b.version == 3 and b.input == "sensor"
    # fault score: 1 - p0 of the class-0 code, a C float; fault iff score >= threshold
    assert P.fault_score(-128, 1 / 256, -128) == 1.0 and P.fault_score(127, 1 / 256, -128) == 0.00390625


def test_live_commands_python():
    assert P.encode_command("capture", 0) == b"capture 0 *11c6\n"
    assert P.parse_command(P.encode_command("capture", 2 ** 31 - 1)) == P.Command(P.CMD_CAPTURE, count=2 ** 31 - 1)
    assert P.parse_command("CAPTURE 0007").count == 7
    for name in ("live", "stop"):
        assert P.parse_command(P.encode_command(name)).type == name
        assert P.parse_command(name + " x").error == "bad_cmd"
    for bad in ("capture", "capture -1", "capture 1 2", "capture 2147483648", "capture 12345678901", "capture x"):
        assert P.parse_command(bad).error == "bad_arg", bad
    for bad in (-1, 2 ** 31, None, 1.5, True):
        with pytest.raises(ValueError):
            P.encode_command("capture", bad)
    with pytest.raises(ValueError):
        P.encode_command("live", 3)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_live_c_header_agrees_with_python(tmp_path):
    (tmp_path / "fedtiny_protocol.h").write_text(P.render_c_header())
    rng = np.random.default_rng(3)
    calls: list[tuple[str, str]] = []
    for args in [(2000, 3, 256, 128, 3200000, "sim", 1 / 32767, "g"),
                 (20000, 6, 40, 20, 0, "adc", 0.001221, "V"), (1, 1, 1, 1, 2 ** 40, "my src", -0.5, "")]:
        rate, ch, win, hop, budget, src, scale, unit = args
        calls.append((f"ft_format_stream(buf, CAP, {rate}L, {ch}, {win}, {hop}, {budget}LL, {P._c_str(src)}, "
                      f"(float){scale!r}, {P._c_str(unit)})", P.format_stream(*args)))
    for q0 in (-128, -1, 0, 57, 127):
        score = P.fault_score(q0, 1 / 256, -128)
        calls.append((f"ft_format_event(buf, CAP, {2 ** 33 + q0}LL, 2, ft_fault_score({q0}, 1.0 / 256, -128), "
                      f"(float)0.5, 140000LL)", P.format_event(2 ** 33 + q0, 2, score, 0.5, 140000)))
    calls.append(("ft_format_beat(buf, CAP, 20000LL, 0, 0LL, 5LL, 9LL, 400000LL)", P.format_beat(20000, 0, 0, 5, 9, 400000)))
    for n, c in [(0, 3), (1, 1), (5, 6), (P.frames_per_line(6), 6), (P.frames_per_line(1), 1)]:
        d = rng.integers(-32768, 32768, size=(n, c)).astype(np.int16)
        d.reshape(-1)[:2] = [-32768, 32767][: d.size]
        arr = "{" + ", ".join(str(int(v)) for v in d.reshape(-1)) + ("0" if d.size == 0 else "") + "}"
        calls.append((f"[&]{{ static const int16_t d[] = {arr}; return ft_format_frames(buf, CAP, {1000 + n}LL, {n}, {c}, d); }}()",
                      P.format_frames(1000 + n, d)))
    calls.append(("ft_format_gap(buf, CAP, 77LL, 3LL)", P.format_gap(77, 3)))
    calls.append(("ft_format_capend(buf, CAP, 100LL, 0LL)", P.format_capend(100, 0)))
    calls.append((f"ft_format_banner_io(buf, CAP, \"b\", 1, {P._c_str(HASH)}, 1L, (float)0.5, FT_THR_FROM_LOCAL, 0, 3, "
                  "FT_CLOCK_ICOUNT, FT_INPUT_SENSOR)",
                  P.format_banner("b", 1, HASH, 1, 0.5, 0, 3, clock="icount", threshold_origin="local", input="sensor")))
    calls.append((f"ft_format_banner(buf, CAP, \"b\", 1, {P._c_str(HASH)}, 1L, (float)0.5, FT_THR_FROM_LOCAL, 0, 3)",
                  P.format_banner("b", 1, HASH, 1, 0.5, 0, 3, threshold_origin="local")))
    cmds = [P.encode_command(n).decode().rstrip("\n") for n in ("live", "stop")]
    cmds += [P.encode_command("capture", k).decode().rstrip("\n") for k in (0, 1, 2 ** 31 - 1)]
    cmds += ["LIVE", "stop now", "capture", "capture ", "capture 0007", "capture -1", "capture 1 2",
             "capture 2147483648", "capture 12345678901", "capture 1x", "Capture 5", "capture 5 *0000"]
    body = ["#include <cstdio>", '#include "fedtiny_protocol.h"', "static char buf[8192];",
            "#define CAP ((int)sizeof buf)",
            "static void emit(int n) { if (n < 0) std::printf(\"FAIL\\n\"); else std::fputs(buf, stdout); }",
            "int main() {"]
    body += [f"  emit({expr});" for expr, _ in calls]
    body += ["  { static const int16_t d[FT_FRAMES_MAX_VALUES + 1] = {0};",
             "    int n = ft_format_frames(buf, CAP, 0, FT_FRAMES_MAX_VALUES + 1, 1, d);",
             "    std::printf(\"OVER %d %d\\n\", n, buf[0]); }",
             "  static ft_line_reader_t rx; ft_line_reader_init(&rx);",
             "  int ch;",
             "  while ((ch = std::getchar()) != EOF) {",
             "    if (ft_line_feed(&rx, (char)ch) != FT_LINE_READY) continue;",
             "    const char* err = NULL; int n = -1; long count = -1;",
             "    ft_cmd_type_t t = ft_parse_command_arg(rx.buf, NULL, 0, &n, &err, &count);",
             "    std::printf(\"CMD %d %ld %s\\n\", (int)t, count, err ? err : \"-\");",
             "  }",
             "  return 0;", "}"]
    src = tmp_path / "live.cpp"
    src.write_text("\n".join(body) + "\n")
    exe = tmp_path / "live"
    cc = subprocess.run(["g++", "-std=c++11", "-O1", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                         "-o", str(exe), str(src)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    out = subprocess.run([str(exe)], input="".join(c + "\n" for c in cmds), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines(keepends=True)
    for (expr, expected), got in zip(calls, lines):
        assert got == expected, expr
        assert P.parse_line(got) is not None, got
    rest = lines[len(calls):]
    assert rest.pop(0) == "OVER -1 0\n"
    assert len(rest) == len(cmds)
    for cmd, got in zip(cmds, rest):
        exp = P.parse_command(cmd)
        assert got == f"CMD {ENUM[exp.type]} {exp.count} {exp.error or '-'}\n", cmd
    assert [P.parse_command(c).type for c in cmds[:5]] == ["live", "stop", "capture", "capture", "capture"]
