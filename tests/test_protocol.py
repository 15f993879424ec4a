"""Protocol v1: one definition, and the C header, the host parser and the Python device side agree.

The C test renders the firmware's header from the shared definition, compiles a small host program
with g++ that calls every ft_format_* and parses (through the header's line reader) every command
the host encoder produces, and checks byte for byte against Python.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest

from fedtiny.firmware import protocol as P

HASH = "ad9ec22a6895da6d2c73f4746bc49dd1962bd246a2d2eeb8d655ed6b14df1c2d"
ENUM = {P.CMD_NONE: 0, P.CMD_INFO: 1, P.CMD_RUN: 2, P.CMD_INFER: 3, P.CMD_RESET: 4, P.CMD_BAD: 5}


def _lines():
    return [P.format_banner("nano33ble", 3, HASH, 4784, 0.5, 24, 6, threshold_origin="local"),
            P.format_banner("esp32", 0, HASH, 3000, 0.123456, 1, 2, clock="host", threshold_origin="fleet"),
            P.format_sample(0, 4, 2, 1834),
            P.format_summary(24, 5, 20, 4, 0, 0, 1790, 1836, 1831, 1902, 1960),
            P.format_infer(2, [-128, -121, 101, -110, 127], 1841),
            P.format_error("bad_len", "expected 240 bytes, got 4"),
            P.format_ready()]


def test_definition_and_crc():
    assert P.PROTOCOL_VERSION == 3 and P.CMD_MAX_LINE == 4096
    assert P.crc16(b"123456789") == 0x29B1
    assert set(P.MESSAGES) == {"banner", "sample", "summary", "infer", "error", "ready", "stream",
                               "event", "beat", "frames", "gap", "capend"}
    assert set(P.COMMANDS) == {"info", "run", "infer", "reset", "live", "capture", "stop"}
    # the JSON ships with the package (package data) and is what the module loaded
    assert json.loads((P.HERE / "protocol.json").read_text()) == P.DEFINITION


def test_format_parse_roundtrip():
    b = P.parse_line(_lines()[0])
    assert b == P.Banner(3, "nano33ble", 3, HASH, 4784, 0.5, "local", 24, 6, "device", "windows")
    assert P.parse_line(_lines()[1]).clock == "host"
    assert P.parse_line(_lines()[2]) == P.Sample(0, 4, 2, 1834)
    assert P.parse_line(_lines()[3]) == P.Summary(24, 5, 20, 4, 0, 0, 1790, 1836, 1831, 1902, 1960)
    assert P.parse_line(_lines()[4]) == P.InferResult(2, (-128, -121, 101, -110, 127), 1841)
    assert P.parse_line(_lines()[5]) == P.Error("bad_len", "expected 240 bytes, got 4")
    assert P.parse_line(_lines()[6]) == P.Ready()
    for line in _lines():
        assert line.endswith("\n") and line.startswith("@") and len(line) <= P.OUT_MAX_LINE
        assert P.parse_line(line.encode()) == P.parse_line(line)
        assert P.parse_line(line.replace("\n", "\r\n")) == P.parse_line(line)


def test_every_single_byte_damage_is_rejected():
    for line in _lines():
        raw = line.encode()
        for i in range(len(raw) - 1):
            assert P.parse_line(raw[:i] + raw[i + 1:]) is None, (line, i)
            for r in (0x00, 0x20, 0x2A, 0x30, 0x40, 0x61, 0x7F, 0xFF, raw[i] ^ 1, raw[i] ^ 0x80):
                if r != raw[i] and r != 0x0A:
                    assert P.parse_line(raw[:i] + bytes([r]) + raw[i + 1:]) is None, (line, i, r)
        assert P.parse_line(raw[: len(raw) // 2]) is None


def test_resync_on_noise_and_lost_newline():
    s = P.format_sample(7, 1, 1, 99)
    assert P.parse_line(b"\x00\xffets Jun  8 2016 rst:0x1 (POWERON)" + s.encode()) == P.Sample(7, 1, 1, 99)
    glued = P.format_sample(6, 0, 0, 98).rstrip("\n") + s      # newline of line 6 lost
    assert P.parse_line(glued) == P.Sample(7, 1, 1, 99)
    for noise in ("", "\n", "m-ready", "e-[unknown command]", "@", "@ready", "@ready *zzzz",
                  "@bogus *" + f"{P.crc16(b'@bogus'):04x}"):
        assert P.parse_line(noise) is None


def test_strict_fields():
    def frame(body: str) -> str:
        return f"{body} *{P.crc16(body.encode()):04x}\n"
    assert P.parse_line(frame("@sample i=1 pred=2 label=2 us=5")) == P.Sample(1, 2, 2, 5)
    for body in ("@sample i=1 pred=2 label=2", "@sample i=1 pred=2 us=5 label=2",
                 "@sample i=01 pred=2 label=2 us=5", "@sample i=1 pred=2 label=2 us=5 x=1",
                 "@sample i=1  pred=2 label=2 us=5", "@infer pred=1 scores=1,200 us=3",
                 "@ready x=1", "@banner v=3 board=a dev=1 model=abc arena=1 thr=0.5 thr_from=local n_test=1 n_classes=2 clock=host",
                 f"@banner v=3 board=a dev=1 model={HASH} arena=1 thr=0.500000 n_test=1 n_classes=2 clock=host"):
        assert P.parse_line(frame(body)) is None, body


def test_foreign_banner():
    line = P.format_banner("x", 1, HASH, 1, 0.5, 1, 2, version=4, threshold_origin="local")
    assert P.parse_line(line) == P.ForeignBanner(4)
    # a v2 board (no input in its banner) is another version too
    v2 = P.format_banner("x", 1, HASH, 1, 0.5, 1, 2, version=2, threshold_origin="local")
    assert P.parse_line(v2.replace(" input=windows", "")) is None    # CRC no longer matches
    body = v2.split(" input=")[0]
    assert P.parse_line(f"{body} *{P.crc16(body.encode()):04x}") == P.ForeignBanner(2)
    # a v1 board (no thr_from in its banner) is another version, not noise (PROTOCOL.md's v1 example)
    v1 = ("@banner v=1 board=nano33ble dev=3 model=ad9ec22a6895da6d2c73f4746bc49dd1962bd246a2d2eeb8d655ed6b14df1c2d "
          "arena=4784 thr=0.500000 n_test=24 n_classes=6 clock=device *17e9")
    assert P.parse_line(v1) == P.ForeignBanner(1)
    body = "@banner v=7 whatever=future"
    assert P.parse_line(f"{body} *{P.crc16(body.encode()):04x}") == P.ForeignBanner(7)


def test_fixed6_matches_c_rules():
    assert P._fixed6(0.5) == "0.500000"
    assert P._fixed6(-0.25) == "-0.250000"
    assert P._fixed6(1e-9) == "0.000000" and P._fixed6(-1e-9) == "0.000000"
    assert P._fixed6(float("nan")) == "nan" and P._fixed6(float("-inf")) == "-inf"
    assert P.parse_line(P.format_banner("b", 1, HASH, 1, float("nan"), 1, 2, threshold_origin="default")).threshold != 0.5


def test_commands_python():
    x = np.array([-128, -1, 0, 127], np.int8)
    enc = P.encode_command("infer", x)
    assert enc == b"infer 80ff007f *7b14\n"
    assert P.parse_command(enc) == P.Command(P.CMD_INFER, x.tobytes())
    for name in ("info", "run", "reset"):
        assert P.parse_command(P.encode_command(name)).type == name
        assert P.parse_command(name.upper()).type == name          # typed by a person, no CRC
    assert P.parse_command(b"info *0000").error == "bad_crc"
    assert P.parse_command(b"infer 0").error == "bad_payload"
    assert P.parse_command(b"run now").error == "bad_cmd"
    assert P.parse_command(b"").type == P.CMD_NONE
    big = np.zeros(P.INFER_MAX_PAYLOAD, np.int8)
    assert len(P.encode_command("infer", big)) <= P.CMD_MAX_LINE
    with pytest.raises(ValueError):
        P.encode_command("infer", np.zeros(P.INFER_MAX_PAYLOAD + 1, np.int8))
    with pytest.raises(ValueError):
        P.encode_command("run", b"\x01")


def test_fault_q0_max_equals_trainer_rule():
    from fedtiny.trainer.threshold import decide, dequantize

    rng = np.random.default_rng(0)
    scale, zp = 1 / 256, -128
    q = rng.integers(-128, 128, size=(2000, 6)).astype(np.int8)
    probs = dequantize(q, scale, zp)
    for t in (0.0, 0.3, 0.5, 0.75, 1.0, 1.5, 1 - float(dequantize(np.int64(-40), scale, zp))):
        cut = P.fault_q0_max(t, scale, zp)
        fault = q[:, 0].astype(int) <= cut
        ours = np.where(fault, 1 + np.argmax(q[:, 1:], axis=1), 0)
        assert np.array_equal(ours, decide(probs, t)), t


def test_latency_summary_definition():
    assert P.latency_summary([]) == (0, 0, 0, 0, 0)
    assert P.latency_summary([5]) == (5, 5, 5, 5, 5)
    us = list(range(1, 101))
    assert P.latency_summary(us) == (1, 51, 50, 95, 100)   # mean 50.5 rounds half up
    assert P.confusion([0, 1, 2, 0], [0, 2, 0, 1]) == dict(n=4, correct=1, tp=1, fp=1, tn=1, fn=1)


def test_header_rendered_from_definition():
    h = P.render_c_header()
    assert "#define FT_PROTOCOL_VERSION 3\n" in h and "#define FT_CMD_MAX_LINE 4096\n" in h
    assert "FT_CMD_NONE = 0, FT_CMD_INFO, FT_CMD_RUN, FT_CMD_INFER, FT_CMD_RESET, FT_CMD_BAD" in h
    for t, m in P.MESSAGES.items():
        assert f'"@{t}"' in h
        for f in m["fields"]:
            assert f'" {f["key"]}="' in h
    for code in P.ERROR_CODES:
        assert f'#define FT_ERR_{code.upper()} "{code}"' in h
    assert "printf(" not in h and "#include <stdio.h>" not in h   # formats by hand (newlib-nano)
    assert "Arduino.h" not in h


# --------------------------------------------------------------------------- C header vs Python

def _c(s: str) -> str:
    return P._c_str(s)


def _cfloat(v: float) -> str:
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return f"(float){v!r}"


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_c_header_agrees_with_python(tmp_path):
    (tmp_path / "fedtiny_protocol.h").write_text(P.render_c_header())
    rng = np.random.default_rng(1)
    calls: list[tuple[str, str]] = []   # (C expression writing buf, expected Python line)

    for board, dev, h, arena, thr, org, nt, nc in [
            ("nano33ble", 3, HASH, 4784, 0.5, "local", 24, 6),
            ("esp32", 0, HASH.upper(), 0, 0.1234565, "fleet", 1, 2),
            ("Nano 33@BLE*", 99, HASH, 2147483647, 1e-7, "de fault*", 0, 10),
            ("", -1, HASH, 1, -0.25, "", 5, 3),
            ("b", 1, HASH, 1, 0.99999994, "default", 5, 3),
            ("b", 1, HASH, 1, 123.456789, "default", 5, 3),
            ("b", 1, HASH, 1, float("nan"), "default", 5, 3),
            ("b", 1, HASH, 1, float("inf"), "default", 5, 3)]:
        c_org = f"FT_THR_FROM_{org.upper()}" if org in P.THRESHOLD_ORIGINS else _c(org)
        args = f'{_c(board)}, {dev}, {_c(h)}, {arena}L, {_cfloat(thr)}, {c_org}, {nt}, {nc}'
        calls.append((f"ft_format_banner(buf, CAP, {args})",
                      P.format_banner(board, dev, h, arena, thr, nt, nc, clock="device", threshold_origin=org)))
        calls.append((f"ft_format_banner_ex(buf, CAP, {args}, FT_CLOCK_HOST)",
                      P.format_banner(board, dev, h, arena, thr, nt, nc, clock="host", threshold_origin=org)))
    for i, p, y, us in [(0, 0, 0, 0), (23, 5, 4, 1834), (2147483647, -1, 7, -2147483647 - 1)]:
        calls.append((f"ft_format_sample(buf, CAP, {i}, {p}, {y}, {us}L)", P.format_sample(i, p, y, us)))
    s = (24, 5, 20, 4, 0, 0, 1790, 1836, 1831, 1902, 1960)
    calls.append((f"ft_format_summary(buf, CAP, {', '.join(map(str, s))})", P.format_summary(*s)))
    calls.append(("ft_format_summary(buf, CAP, 0,0,0,0,0,0,0,0,0,0,0)", P.format_summary(*[0] * 11)))
    for k in (0, 1, 6, 40):
        sc = rng.integers(-128, 128, size=k).tolist() + ([-128, 127] if k else [])
        arr = "{" + ", ".join(map(str, sc or [0])) + "}"
        calls.append((f"[&]{{ static const int8_t s[] = {arr}; return ft_format_infer(buf, CAP, {k % 6}, s, {len(sc)}, 1841L); }}()",
                      P.format_infer(k % 6, sc, 1841)))
    for code, detail in [("bad_len", "expected 240 bytes, got 4"), ("too_long", ""),
                         ("weird code!", "tab\there @ star * del\x7f ~end"), ("", "x")]:
        calls.append((f"ft_format_error(buf, CAP, {_c(code)}, {_c(detail)})", P.format_error(code, detail)))
    calls.append(("ft_format_ready(buf, CAP)", P.format_ready()))

    lat_cases = [rng.integers(1, 100000, size=n).tolist() for n in (1, 2, 5, 20, 21, 100)]
    scale, zp = 1 / 256, -128
    dec_cases = []
    for t in (0.5, 0.2, 1 - (-40 - zp) * scale, 1.0):
        cut = P.fault_q0_max(t, scale, zp)
        for q in rng.integers(-128, 128, size=(40, 6)).tolist() + [[-40, 3, 9, 9, 1, 0]]:
            dec_cases.append((q, cut, t))
    pairs = rng.integers(0, 4, size=(50, 2)).tolist()

    body = ["#include <cmath>", "#include <cstdio>", '#include "fedtiny_protocol.h"',
            "static char buf[8192];", "#define CAP ((int)sizeof buf)",
            "static void emit(int n) { if (n < 0) std::printf(\"FAIL\\n\"); else std::fputs(buf, stdout); }",
            "int main() {"]
    body += [f"  emit({expr});" for expr, _ in calls]
    body += ["  { int full = ft_format_sample(buf, CAP, 1, 2, 3, 4L);",
             "    int a = ft_format_sample(buf, full, 1, 2, 3, 4L); int empty = buf[0] == 0;",
             "    int b = ft_format_sample(buf, full + 1, 1, 2, 3, 4L);",
             "    std::printf(\"CAP %d %d %d %d %d\\n\", full, a, empty, b, ft_format_ready(NULL, 0)); }"]
    for us in lat_cases:
        body.append("  { long us[] = {" + ", ".join(f"{u}L" for u in us) + "}; long a, b, c, d, e;"
                    f" ft_latency_summary(us, {len(us)}, &a, &b, &c, &d, &e);"
                    " std::printf(\"LAT %ld %ld %ld %ld %ld\\n\", a, b, c, d, e); }")
    for q, cut, _ in dec_cases:
        body.append("  { static const int8_t q[] = {" + ", ".join(map(str, q)) + "};"
                    f" std::printf(\"DEC %d\\n\", ft_decide_q(q, 6, {cut})); }}")
    body.append("  { ft_counts_t c = {0, 0, 0, 0, 0, 0};")
    body += [f"    ft_counts_add(&c, {p}, {y});" for p, y in pairs]
    body.append("    std::printf(\"CNT %d %d %d %d %d %d\\n\", c.n, c.correct, c.tp, c.fp, c.tn, c.fn); }")
    body += ["  std::printf(\"COMMANDS\\n\");",
             "  static ft_line_reader_t rx; ft_line_reader_init(&rx);",
             "  static int8_t payload[FT_INFER_MAX_PAYLOAD], payload2[FT_INFER_MAX_PAYLOAD];",
             "  int ch;",
             "  while ((ch = std::getchar()) != EOF) {",
             "    int r = ft_line_feed(&rx, (char)ch);",
             "    if (r == FT_LINE_OVERFLOW) { std::printf(\"CMD overflow\\n\"); continue; }",
             "    if (r != FT_LINE_READY) continue;",
             "    const char* err = NULL; int n = -1, n2 = -1;",
             "    ft_cmd_type_t t = ft_parse_command_ex(rx.buf, payload, FT_INFER_MAX_PAYLOAD, &n, &err);",
             "    ft_cmd_type_t t2 = ft_parse_command(rx.buf, payload2, FT_INFER_MAX_PAYLOAD, &n2);",
             "    std::printf(\"CMD %d %d %s \", (int)t, n, (t2 == t && n2 == n) ? \"same\" : \"DIFF\");",
             "    for (int i = 0; i < n; ++i) std::printf(\"%02x\", (unsigned)(uint8_t)payload[i]);",
             "    std::printf(\" %s\\n\", err ? err : \"-\");",
             "  }",
             "  return 0;", "}"]
    src = tmp_path / "host.cpp"
    src.write_text("\n".join(body) + "\n")
    exe = tmp_path / "host"
    cc = subprocess.run(["g++", "-std=c++11", "-O1", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                         "-o", str(exe), str(src)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr

    # every command the host encoder produces, plus what a person or a bad link may send
    cmds = [P.encode_command(n).decode() for n in ("info", "run", "reset")]
    cmds += [P.encode_command(n, checksum=False).decode() for n in ("info", "run", "reset")]
    for size in (1, 7, 240, P.INFER_MAX_PAYLOAD):
        x = rng.integers(-128, 128, size=size).astype(np.int8)
        cmds.append(P.encode_command("infer", x).decode())
        cmds.append(P.encode_command("infer", x, checksum=False).decode())
    cmds = [c.rstrip("\n") for c in cmds]
    good = P.encode_command("infer", np.array([-128, -1, 0, 127], np.int8)).decode().rstrip("\n")
    cmds += ["INFO", "  run  ", "run\r", "Reset", "info *0000", "reset *e60b", "info *zzzz",
             good.replace("80ff", "80fe"), good[:-4] + good[-4:].upper(), "infer", "infer ",
             "infer 0", "infer zz", "infer 00 11", "foo", "run now", "", "infer " + "00" * (P.INFER_MAX_PAYLOAD + 1),
             "x" * 5000, "info", "infer " + "ab" * 2047]
    stdin = "".join(c + "\n" for c in cmds)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines(keepends=True)

    # 1. device messages: byte-identical to Python, and the host parses them back
    for (expr, expected), got in zip(calls, lines):
        assert got == expected, expr
        msg = P.parse_line(got)
        assert msg is not None, got
        assert P.format_message(msg.TYPE, **{k: v for k, v in P.to_dict(msg).items() if k != "type"}) == got
    first = P.parse_line(lines[0])
    assert first == P.Banner(3, "nano33ble", 3, HASH, 4784, 0.5, "local", 24, 6, "device", "windows")
    assert P.parse_line(lines[1]).clock == "host"
    assert P.parse_line(lines[2]).model_hash == HASH and P.parse_line(lines[2]).threshold == 0.123457
    assert P.parse_line(lines[4]).board == "Nano_33_BLE_"
    assert P.parse_line(lines[4]).threshold_origin == "de_fault_" and P.parse_line(lines[6]).threshold_origin == "_"
    rest = lines[len(calls):]

    # 2. capacity contract: -1 and an empty string when the buffer is too small
    cap = rest.pop(0).split()
    assert cap[0] == "CAP" and int(cap[2]) == -1 and cap[3] == "1" and cap[4] == cap[1] and cap[5] == "-1"

    # 3. shared arithmetic
    for us in lat_cases:
        assert rest.pop(0).split() == ["LAT", *map(str, P.latency_summary(us))]
    from fedtiny.trainer.threshold import decide, dequantize
    for q, cut, t in dec_cases:
        expect = int(decide(dequantize(np.array([q]), scale, zp), t)[0])
        assert rest.pop(0).split() == ["DEC", str(expect)], (q, t)
    c = P.confusion([p for p, _ in pairs], [y for _, y in pairs])
    assert rest.pop(0).split() == ["CNT", *map(str, (c["n"], c["correct"], c["tp"], c["fp"], c["tn"], c["fn"]))]

    # 4. commands: the C parser (through its line reader) agrees with the Python mirror
    assert rest.pop(0) == "COMMANDS\n"
    assert len(rest) == len(cmds)
    for cmd, got in zip(cmds, rest):
        if len(cmd) > P.CMD_MAX_LINE - 1:
            assert got == "CMD overflow\n", cmd[:40]
            continue
        exp = P.parse_command(cmd)
        n = len(exp.payload) if exp.type == P.CMD_INFER else 0
        want = f"CMD {ENUM[exp.type]} {n} same {exp.payload.hex() if exp.type == P.CMD_INFER else ''} {exp.error or '-'}\n"
        assert got == want, cmd[:60]
    # the host's own commands all parse as what they are
    assert [ENUM[P.parse_command(c).type] for c in cmds[:14]] == [1, 2, 4, 1, 2, 4] + [3] * 8


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_header_is_c99(tmp_path):
    (tmp_path / "fedtiny_protocol.h").write_text(P.render_c_header())
    src = tmp_path / "t.c"
    src.write_text('#include "fedtiny_protocol.h"\nint main(void) { char b[64]; return ft_format_ready(b, 64) < 0; }\n')
    cc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-o",
                         str(tmp_path / "t"), str(src)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    assert subprocess.run([str(tmp_path / "t")]).returncode == 0
