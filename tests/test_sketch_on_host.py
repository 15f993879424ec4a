"""EXECUTE the generated firmware sketch on the host and drive it with the real host bench.

TFLM's C++ sources and the Arduino cores cannot be fetched here, so the sketch cannot be built for a
board. Instead, the project that ``build_project`` generates
(src/main.cpp, model_data.cpp, test_data.cpp and the include/ headers, unmodified) is compiled
with g++ against *behavioural* stand-ins and run as a host program whose Serial is a real
pseudo-terminal:

* ``Arduino.h``: ``Serial`` reads fd 0 and writes fd 1 (the master side of a pty), ``micros()``
  is CLOCK_MONOTONIC, ``NVIC_SystemReset()`` / ``ESP.restart()`` re-exec the program (same pid,
  same pty: it boots again and prints its banner). The shim's ``main()`` runs ``setup()`` then
  ``loop()`` and exits with 0 when the pty hangs up.
* TFLM: ``GetModel`` reads the schema version out of the embedded flatbuffer bytes; the op
  resolver counts registrations and refuses past its template capacity or a duplicate (like
  TFLM); the interpreter lays its int8 input/output tensors out inside the arena it is given and
  refuses an arena smaller than the host TFLM figure; ``Invoke()`` is an ORACLE: it looks the
  input up in a table generated here from the run's test split with the REAL model's int8 outputs
  (``fedtiny.trainer.tflm.run_int8``) and writes them (unknown input -> kTfLiteError). A few
  synthetic windows with hand-made outputs around ``FT_Q0_FAULT_MAX`` probe the decision rule.

So the sketch's own code is what is tested: protocol handling, ``ft_decide_q`` with the generated
cutoff, counting, the latency summary, error paths and reset, end to end through
``fedtiny.bench.bench_device`` (the same host code a board gets) and through raw protocol lines.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from fedtiny.codegen.ops import OP_TABLE
from fedtiny.firmware import protocol as P
from hoststubs import ARDUINO_H

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

DEVICE = 3
RESOLVER_METHODS = sorted(set(OP_TABLE.values()))

# --------------------------------------------------------------------------- stand-in headers


SCHEMA_H = r"""
#pragma once
#include <stdint.h>
#define TFLITE_SCHEMA_VERSION (3)
namespace tflite {
// A view of the model flatbuffer; version() reads field 0 (version) of the root table.
struct Model { uint32_t version() const; };
inline const Model* GetModel(const void* buf) { return static_cast<const Model*>(buf); }
}
"""

INTERPRETER_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/schema/schema_generated.h"
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt8 = 9 } TfLiteType;
typedef union { int8_t* int8; float* f; } TfLitePtrUnion;
typedef struct { TfLiteType type; TfLitePtrUnion data; size_t bytes; } TfLiteTensor;
namespace tflite {
class MicroOpResolver {
 public:
  explicit MicroOpResolver(unsigned int capacity) : capacity_(capacity), count_(0), seen_() {}
  unsigned int registered() const { return count_; }
  bool has(unsigned int id) const { return id < kMaxIds && seen_[id]; }
  static const unsigned int kMaxIds = 128;
 protected:
  // Like TFLM: refuses a registration past the capacity and a second one of the same op.
  TfLiteStatus add(unsigned int id) {
    if (id >= kMaxIds || seen_[id] || count_ >= capacity_) return kTfLiteError;
    seen_[id] = true;
    ++count_;
    return kTfLiteOk;
  }
 private:
  unsigned int capacity_;
  unsigned int count_;
  bool seen_[kMaxIds];
};
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,
                   size_t tensor_arena_size);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t arena_used_bytes() const;
 private:
  const Model* model_;
  const MicroOpResolver* resolver_;
  uint8_t* arena_;
  size_t arena_size_;
  size_t used_;
  TfLiteTensor* input_;
  TfLiteTensor* output_;
};
}
"""


def resolver_h(required: list[str]) -> str:
    ids = {m: i for i, m in enumerate(RESOLVER_METHODS)}
    methods = "".join(f"  TfLiteStatus {m}() {{ return add({ids[m]}); }}\n" for m in RESOLVER_METHODS)
    req = ", ".join(str(ids[m]) for m in required)
    return (
        "#pragma once\n#include \"tensorflow/lite/micro/micro_interpreter.h\"\n"
        "namespace tflite {\ntemplate <unsigned int tOpCount>\n"
        "class MicroMutableOpResolver : public MicroOpResolver {\n public:\n"
        "  MicroMutableOpResolver() : MicroOpResolver(tOpCount) {}\n" + methods + "};\n}\n"
        f"// the resolver ids of the ops this model uses (AllocateTensors checks them)\n"
        f"static const unsigned int kFtShimRequiredOps[] = {{{req}}};\n"
        f"static const unsigned int kFtShimNRequiredOps = {len(required)};\n")


SHIM_CPP = r"""
// Host shim: Arduino + TFLM behaviour for running the generated sketch as a host program.
#include <Arduino.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "fedtiny_config.h"
#include "ftshim_table.h"

void setup();
void loop();

FakeSerial Serial;
FakeEsp ESP;

namespace {
char** g_argv = nullptr;
unsigned char g_rx[4096];
size_t g_rx_head = 0, g_rx_len = 0;
struct timespec g_t0;

// Fill the receive buffer from fd 0 (waiting up to timeout_ms); exit 0 when the pty hangs up.
void pump(int timeout_ms) {
  if (g_rx_head < g_rx_len) return;
  struct pollfd p;
  p.fd = 0; p.events = POLLIN; p.revents = 0;
  int r = poll(&p, 1, timeout_ms);
  if (r < 0) { if (errno == EINTR) return; _exit(3); }
  if (r == 0) return;
  if (p.revents & POLLIN) {
    ssize_t n = ::read(0, g_rx, sizeof g_rx);
    if (n > 0) { g_rx_head = 0; g_rx_len = static_cast<size_t>(n); return; }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    _exit(0);   // EOF / EIO: nobody holds the port any more
  }
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) _exit(0);
}

unsigned long long elapsed_us() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<unsigned long long>(t.tv_sec - g_t0.tv_sec) * 1000000ull +
         static_cast<unsigned long long>((t.tv_nsec - g_t0.tv_nsec) / 1000);
}

void sleep_us(unsigned long long us) {
  struct timespec t;
  t.tv_sec = static_cast<time_t>(us / 1000000ull);
  t.tv_nsec = static_cast<long>((us % 1000000ull) * 1000ull);
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

[[noreturn]] void restart_program() {
  fprintf(stderr, "ftshim: restart\n");
  fflush(stderr);
  execv("/proc/self/exe", g_argv);
  fprintf(stderr, "ftshim: execv failed: %s\n", strerror(errno));
  _exit(4);
}

uint32_t rd32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
uint16_t rd16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }
}  // namespace

int FakeSerial::available() { pump(0); return static_cast<int>(g_rx_len - g_rx_head); }

int FakeSerial::read() {
  pump(0);
  if (g_rx_head >= g_rx_len) return -1;
  return g_rx[g_rx_head++];
}

size_t FakeSerial::write(const uint8_t* data, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(1, data + done, n - done);
    if (w > 0) { done += static_cast<size_t>(w); continue; }
    if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    _exit(0);   // the pty is gone
  }
  return n;
}

unsigned long micros() { return static_cast<unsigned long>(elapsed_us()); }
unsigned long millis() { return static_cast<unsigned long>(elapsed_us() / 1000ull); }
void delay(unsigned long ms) { sleep_us(static_cast<unsigned long long>(ms) * 1000ull); }
void NVIC_SystemReset() { restart_program(); }
void FakeEsp::restart() { restart_program(); }

namespace tflite {

uint32_t Model::version() const {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(this);
  const uint8_t* table = b + rd32(b);
  const uint8_t* vtable = table - static_cast<int32_t>(rd32(table));
  if (rd16(vtable) < 6) return 0;
  uint16_t off = rd16(vtable + 4);
  return off ? rd32(table + off) : 0;
}

MicroInterpreter::MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver,
                                   uint8_t* tensor_arena, size_t tensor_arena_size)
    : model_(model), resolver_(&op_resolver), arena_(tensor_arena),
      arena_size_(tensor_arena_size), used_(0), input_(nullptr), output_(nullptr) {}

TfLiteStatus MicroInterpreter::AllocateTensors() {
  if (model_ == nullptr || arena_ == nullptr) return kTfLiteError;
  for (unsigned int i = 0; i < kFtShimNRequiredOps; ++i) {
    if (!resolver_->has(kFtShimRequiredOps[i])) {
      fprintf(stderr, "ftshim: op %u of the model was not registered\n", kFtShimRequiredOps[i]);
      return kTfLiteError;
    }
  }
  // tensor data at the (16-aligned) head of the arena, the tensor structs after it
  uintptr_t base = reinterpret_cast<uintptr_t>(arena_);
  uintptr_t p = (base + 15) & ~static_cast<uintptr_t>(15);
  int8_t* in_data = reinterpret_cast<int8_t*>(p);
  p = (p + FT_INPUT_BYTES + 15) & ~static_cast<uintptr_t>(15);
  int8_t* out_data = reinterpret_cast<int8_t*>(p);
  p = (p + FT_N_CLASSES + 15) & ~static_cast<uintptr_t>(15);
  TfLiteTensor* tensors = reinterpret_cast<TfLiteTensor*>(p);
  p += 2 * sizeof(TfLiteTensor);
  size_t layout = static_cast<size_t>(p - base);
  // what the real interpreter needs: the host TFLM figure (override: FTSHIM_ARENA_NEED)
  size_t need = FTSHIM_HOST_ARENA;
  const char* env = getenv("FTSHIM_ARENA_NEED");
  if (env != nullptr) need = static_cast<size_t>(strtoul(env, nullptr, 10));
  if (need < layout) need = layout;
  if (need > arena_size_) {
    fprintf(stderr, "ftshim: arena of %lu B is smaller than the %lu B needed\n",
            static_cast<unsigned long>(arena_size_), static_cast<unsigned long>(need));
    return kTfLiteError;
  }
  memset(arena_, 0x5a, layout);   // stale garbage, as a reused arena would hold
  tensors[0].type = kTfLiteInt8; tensors[0].data.int8 = in_data; tensors[0].bytes = FT_INPUT_BYTES;
  tensors[1].type = kTfLiteInt8; tensors[1].data.int8 = out_data; tensors[1].bytes = FT_N_CLASSES;
  input_ = &tensors[0];
  output_ = &tensors[1];
  used_ = need;
  return kTfLiteOk;
}

TfLiteStatus MicroInterpreter::Invoke() {
  if (input_ == nullptr) return kTfLiteError;
  const char* env = getenv("FTSHIM_UNKNOWN");   // a table row to forget (Invoke failure tests)
  const int unknown = env != nullptr ? atoi(env) : -1;
  for (int i = 0; i < kFtShimN; ++i) {
    if (i != unknown && memcmp(kFtShimX[i], input_->data.int8, FT_INPUT_BYTES) == 0) {
      sleep_us(kFtShimDelayUs[i]);   // a known, window-dependent latency
      memcpy(output_->data.int8, kFtShimY[i], FT_N_CLASSES);
      return kTfLiteOk;
    }
  }
  return kTfLiteError;   // not a window the oracle knows
}

TfLiteTensor* MicroInterpreter::input(size_t index) { return index == 0 ? input_ : nullptr; }
TfLiteTensor* MicroInterpreter::output(size_t index) { return index == 0 ? output_ : nullptr; }
size_t MicroInterpreter::arena_used_bytes() const { return used_; }

}  // namespace tflite

int main(int argc, char** argv) {
  (void)argc;
  g_argv = argv;
  clock_gettime(CLOCK_MONOTONIC, &g_t0);
  fprintf(stderr, "ftshim: boot\n");
  fflush(stderr);
  setup();
  for (;;) {
    pump(100);   // sleep until bytes arrive (or exit on hang-up), then let the sketch read them
    loop();
  }
}
"""

TABLE_H = r"""
#pragma once
#include <stdint.h>
#include "fedtiny_config.h"
extern const int kFtShimN;
extern const int8_t kFtShimX[][FT_INPUT_BYTES];
extern const int8_t kFtShimY[][FT_N_CLASSES];
extern const unsigned long kFtShimDelayUs[];
"""


def table_cpp(xs: np.ndarray, ys: np.ndarray, delays: list[int]) -> str:
    def rows(a):
        return ",\n".join("  {" + ",".join(str(int(v)) for v in r) + "}" for r in a)
    return ('#include "ftshim_table.h"\n'
            f"const int kFtShimN = {len(xs)};\n"
            f"const int8_t kFtShimX[][FT_INPUT_BYTES] = {{\n{rows(xs)}\n}};\n"
            f"const int8_t kFtShimY[][FT_N_CLASSES] = {{\n{rows(ys)}\n}};\n"
            f"const unsigned long kFtShimDelayUs[] = {{{','.join(str(d) for d in delays)}}};\n")


def delay_us(i: int) -> int:
    return 150 + (i * 53) % 400


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from runfixture import make_run_dir

    run = make_run_dir(tmp_path_factory.mktemp("sketch_run") / "run", device=DEVICE)
    # a non-default threshold origin, so the banner's thr_from must come from device.json
    info_path = run / "devices" / f"dev{DEVICE:02d}" / "device.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "threshold_origin": "fleet"}))
    return run


def config_define(text: str, name: str) -> str:
    m = re.search(rf"^#define {name} (.+)$", text, re.M)
    assert m, name
    return m.group(1).strip()


class Sketch:
    """The generated project, compiled with the stand-ins, plus the oracle's facts."""

    def __init__(self, run: Path, board: str, root: Path, device: int = DEVICE):
        from fedtiny.codegen.build import build_project
        from fedtiny.trainer.threshold import decide, dequantize
        from fedtiny.trainer.tflm import run_int8

        self.run, self.board, self.device = run, board, device
        ddir = run / "devices" / f"dev{device:02d}"
        split = np.load(ddir / "test_split.npz")
        self.x_int8, self.y, self.pred_int8 = split["x_int8"], split["y"], split["pred_int8"]
        self.info = json.loads((ddir / "device.json").read_text())
        self.model = (ddir / "model_int8.tflite").read_bytes()
        self.scores = run_int8(self.model, self.x_int8)          # the REAL model's int8 outputs

        built = build_project(run, device, board=board, out_dir=root / "proj", compile=False)
        self.proj = built.project_dir
        self.manifest = json.loads((self.proj / "fedtiny_build.json").read_text())
        cfg = (self.proj / "include" / "fedtiny_config.h").read_text()
        self.q0_max = int(config_define(cfg, "FT_Q0_FAULT_MAX"))
        self.arena_cfg = int(config_define(cfg, "FT_ARENA_BYTES"))
        self.heap = config_define(cfg, "FT_ARENA_ON_HEAP")
        self.n_classes = int(config_define(cfg, "FT_N_CLASSES"))
        self.window = int(config_define(cfg, "FT_INPUT_BYTES"))
        self.host_arena = int(self.manifest["host_arena_bytes"])
        self.n_test = built.test_samples

        # synthetic windows (not in the split) with hand-made outputs around the cutoff
        k, q = self.n_classes, self.q0_max
        clip = lambda v: int(np.clip(v, -128, 127))  # noqa: E731
        faults = [[-128] * (k - 1), [5, 7, 7, -3, 0][: k - 1], list(range(k - 1)),
                  list(range(k - 1, 0, -1)), [127] * (k - 1)]
        syn_y = []
        for q0 in (q - 1, q, q + 1, -128, 127):
            for f in faults:
                syn_y.append([clip(q0)] + [clip(v) for v in (f + [0] * k)[: k - 1]])
        self.syn_y = np.unique(np.array(syn_y, np.int8), axis=0)
        rng = np.random.default_rng(7)
        flat = self.x_int8.reshape(len(self.x_int8), -1)
        self.syn_x = rng.integers(-128, 128, size=(len(self.syn_y), self.window)).astype(np.int8)
        assert not any((flat == s).all(axis=1).any() for s in self.syn_x)
        probs = dequantize(self.syn_y, self.info["output_scale"], self.info["output_zero_point"])
        self.syn_pred = decide(probs, self.info["threshold"])      # the trainer's float rule
        assert set(self.syn_pred) - {0} and 0 in set(self.syn_pred)   # both sides of the cutoff

        stubs = root / "stubs"
        files = {
            "Arduino.h": ARDUINO_H, "TensorFlowLite.h": "#pragma once\n",
            "tensorflow/lite/schema/schema_generated.h": SCHEMA_H,
            "tensorflow/lite/micro/micro_interpreter.h": INTERPRETER_H,
            "tensorflow/lite/micro/micro_mutable_op_resolver.h":
                resolver_h([OP_TABLE[op] for op in self.manifest["ops"]]),
            "ftshim_table.h": TABLE_H,
        }
        for rel, text in files.items():
            (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
            (stubs / rel).write_text(text)
        xs = np.concatenate([flat, self.syn_x])
        ys = np.concatenate([self.scores.reshape(len(flat), -1), self.syn_y])
        (root / "ftshim.cpp").write_text(SHIM_CPP)
        (root / "ftshim_table.cpp").write_text(table_cpp(xs, ys, [delay_us(i) for i in range(len(xs))]))
        self.exe = root / "sketch"
        srcs = sorted(str(p) for p in (self.proj / "src").glob("*.cpp"))
        cmd = ["g++", "-std=c++11", "-O0", "-Wall", "-Wextra", "-Werror",
               f"-DFTSHIM_HOST_ARENA={self.host_arena}",
               "-I", str(stubs), "-I", str(self.proj / "include"),
               *srcs, str(root / "ftshim.cpp"), str(root / "ftshim_table.cpp"), "-o", str(self.exe)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-4000:]


class Running:
    """The compiled sketch running on the master side of a pty; ``port`` is the slave path."""

    def __init__(self, exe: Path, errlog: Path, env_extra: dict | None = None):
        self.errlog = errlog
        master, self.slave = os.openpty()
        try:
            tty.setraw(self.slave)
            self.port = os.ttyname(self.slave)
            self._err = open(errlog, "wb")
            try:
                self.proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, stderr=self._err,
                                             env={**os.environ, **(env_extra or {})}, close_fds=True)
            except BaseException:
                self._err.close()
                os.close(self.slave)
                raise
        finally:
            os.close(master)                  # the child holds it now
        self.buf = b""
        self.lines: list[bytes] = []      # every raw line read through ``read_line``

    def stderr(self) -> str:
        return self.errlog.read_text(errors="replace")

    # ------------------------------------------------------------ raw protocol
    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.slave, view):]

    def read_line(self, timeout: float = 120.0) -> bytes:       # a hang guard: returns on the line
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {timeout}s; pending {self.buf[:200]!r}; stderr: {self.stderr()}"
            r, _, _ = select.select([self.slave], [], [], left)
            if r:
                self.buf += os.read(self.slave, 65536)
        line, _, self.buf = self.buf.partition(b"\n")
        line += b"\n"
        self.lines.append(line)
        return line

    def message(self, timeout: float = 120.0):
        line = self.read_line(timeout)
        msg = P.parse_line(line)
        assert msg is not None, f"the sketch emitted a line that does not parse: {line!r}"
        return msg

    def until_ready(self, timeout: float = 120.0) -> list:
        """Messages up to and including the next ``ready``."""
        out = [self.message(timeout)]
        while not isinstance(out[-1], P.Ready):
            out.append(self.message(timeout))
        return out

    def silent(self, wait: float = 0.3) -> bool:
        r, _, _ = select.select([self.slave], [], [], wait)
        return not r and b"\n" not in self.buf

    def drain(self) -> None:
        while not self.silent(0.2):
            self.buf += os.read(self.slave, 65536)
        self.buf = b""

    # ------------------------------------------------------------ shutdown
    def hang_up(self, timeout: float = 5.0) -> int | None:
        """Close the port's last holder: the program must notice and exit by itself."""
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None
        self._err.close()


def cmd_with_crc(text: str) -> bytes:
    return f"{text}{P.CRC_SEP}{P.crc16(text.encode()):04x}\n".encode()


@pytest.fixture(scope="module", params=["nano33ble", "esp32dev"])
def sketch(request, run_dir, tmp_path_factory) -> Sketch:
    return Sketch(run_dir, request.param, tmp_path_factory.mktemp(f"sketch_{request.param}"))


# --------------------------------------------------------------------------- tests

def test_bench_drives_the_generated_sketch(sketch: Sketch, tmp_path):
    from fedtiny.bench import bench_device

    assert sketch.heap == ("1" if sketch.board == "esp32dev" else "0")
    dev = Running(sketch.exe, tmp_path / "stderr.txt")
    try:
        boot = dev.until_ready()                        # the boot banner, before anyone asked
        assert isinstance(boot[0], P.Banner) and len(boot) == 2, boot
        banner = boot[0]
        # reset=True: 'reset' first, then the boot banner on the same port (the pty survives)
        res = bench_device(dev.port, sketch.run, DEVICE, stream=sketch.n_test, timeout=5, reset=True)

        n = sketch.n_test
        assert n == len(sketch.y) == 24
        assert res.ok, (res.decision_mismatches, res.label_mismatches, res.stream)
        assert res.clock == "device" and res.board == sketch.board and res.device_id == DEVICE
        assert res.hash_ok and res.model_hash == sketch.info["model_sha256"]
        assert res.n == res.n_test == n
        assert res.link["dropped_lines"] == 0 and res.link["passes"] == 1
        assert res.link["refetched_by_infer"] == [] and res.link["reconnects"] == 0
        assert not res.warnings, res.warnings
        # sample for sample: the sketch's ft_decide_q(FT_Q0_FAULT_MAX) == the trainer's float rule
        assert [s["index"] for s in res.samples] == list(range(n))
        assert [s["pred"] for s in res.samples] == [int(p) for p in sketch.pred_int8[:n]]
        assert [s["label"] for s in res.samples] == [int(v) for v in sketch.y[:n]]
        assert all(s["source"] == "run" for s in res.samples)
        assert res.accuracy == pytest.approx(float(np.mean(sketch.pred_int8 == sketch.y)), abs=0)
        assert res.accuracy == res.expected_accuracy
        # the device's own counting and latency summary agree with its sample lines
        assert res.summary_agrees is True
        summ = res.device_summary
        for key in ("min", "mean", "p50", "p95", "max"):
            assert summ[f"lat_{key}"] == res.latency_us[key], (summ, res.latency_us)
        # micros() really wraps Invoke(): every latency covers the oracle's known delay
        for s in res.samples:
            assert delay_us(s["index"]) <= s["micros"] < delay_us(s["index"]) + 1_000_000, s
        assert len({s["micros"] for s in res.samples}) > 1
        # streamed windows: raw int8 scores exactly those of tflite-micro on the host
        st = res.stream
        assert st["n"] == n and st["decision_mismatches"] == [] and st["max_score_lsb_diff"] == 0
        assert [r["scores"] for r in st["samples"]] == sketch.scores.astype(int).tolist()
        # the arena the sketch reports: the interpreter's arena_used_bytes() + 16
        assert res.arena_bytes == banner.arena_bytes == sketch.host_arena + 16
        assert res.arena_bytes <= sketch.arena_cfg
        assert res.threshold == pytest.approx(sketch.info["threshold"], abs=1e-6)
        assert res.threshold_origin == res.expected_threshold_origin == "fleet" and res.threshold_origin_ok
        assert res.n_classes == sketch.n_classes
        # the 'reset' really restarted the program (same pid, booted again)
        assert dev.proc.poll() is None
        assert dev.stderr().count("ftshim: boot") == 2 and "ftshim: restart" in dev.stderr()
        # unplugging (last holder of the pty closes it) ends the program cleanly
        assert dev.hang_up() == 0, dev.stderr()
    finally:
        dev.close()


def test_raw_protocol_and_error_paths(sketch: Sketch, tmp_path):
    dev = Running(sketch.exe, tmp_path / "stderr.txt")
    w = sketch.window
    try:
        boot = dev.until_ready()
        assert [type(m) for m in boot] == [P.Banner, P.Ready]
        b = boot[0]
        assert (b.version, b.board, b.device_id, b.model_hash, b.n_test, b.n_classes, b.clock) == (
            P.PROTOCOL_VERSION, sketch.board, DEVICE, sketch.info["model_sha256"], sketch.n_test,
            sketch.n_classes, "device")
        assert b.arena_bytes == sketch.host_arena + 16 and b.threshold_origin == "fleet"

        def ask(data: bytes) -> list:
            dev.send(data)
            return dev.until_ready()

        def error_of(data: bytes) -> P.Error:
            msgs = ask(data)
            assert [type(m) for m in msgs] == [P.Error, P.Ready], msgs
            return msgs[0]

        # a person typing: no checksum, upper case, CRLF
        assert ask(b"INFO\r\n") == [b, P.Ready()]
        # unknown command; arguments where none are allowed
        e = error_of(cmd_with_crc("frobnicate"))
        assert e.code == "bad_cmd" and e.detail.startswith("frobnicate")
        assert error_of(cmd_with_crc("info now")).code == "bad_cmd"
        # payload of the wrong length
        e = error_of(P.encode_command("infer", np.zeros(4, np.int8)))
        assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got 4")
        e = error_of(P.encode_command("infer", np.zeros(w + 1, np.int8)))
        assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got {w + 1}")
        # damaged checksum; a payload damaged on the wire is rejected, not inferred
        good = P.encode_command("info")
        assert error_of(good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\n").code == "bad_crc"
        x0 = P.encode_command("infer", sketch.x_int8[0])
        hexpos = len(b"infer ") + 10
        damaged = x0[:hexpos] + (b"0" if x0[hexpos:hexpos + 1] != b"0" else b"1") + x0[hexpos + 1:]
        assert error_of(damaged).code == "bad_crc"
        # bad payloads, an over-long line
        assert error_of(cmd_with_crc("infer 0g")).code == "bad_payload"
        assert error_of(cmd_with_crc("infer abc")).code == "bad_payload"
        assert error_of(cmd_with_crc("infer")).code == "bad_payload"
        assert error_of(b"x" * (P.CMD_MAX_LINE + 10) + b"\n").code == "too_long"
        # the line reader's boundary: 4095 characters are a line, 4096 are too long
        assert error_of(b"x" * (P.CMD_MAX_LINE - 1) + b"\n").code == "bad_cmd"
        assert error_of(b"x" * P.CMD_MAX_LINE + b"\n").code == "too_long"
        # the largest payload a command line carries reaches the sketch whole
        e = error_of(P.encode_command("infer", np.zeros(P.INFER_MAX_PAYLOAD, np.int8)))
        assert (e.code, e.detail) == ("bad_len", f"expected {w} bytes, got {P.INFER_MAX_PAYLOAD}")
        assert error_of(cmd_with_crc("infer " + "00" * (P.INFER_MAX_PAYLOAD + 1))).code == "too_long"
        # the interpreter failing (a window the oracle does not know) -> 'invoke'
        unknown = sketch.x_int8[0].copy().reshape(-1)
        unknown[0] = np.int8(unknown[0] ^ 1)
        assert error_of(P.encode_command("infer", unknown)).code == "invoke"
        # an empty line gets no answer
        dev.send(b"\n\r\n  \n")
        assert dev.silent(0.4)
        # infer on the test windows: the model's exact scores and the host's decision
        for i in (0, 5, len(sketch.y) - 1):
            msgs = ask(P.encode_command("infer", sketch.x_int8[i]))
            assert [type(m) for m in msgs] == [P.InferResult, P.Ready]
            assert msgs[0].scores == tuple(int(v) for v in sketch.scores[i])
            assert msgs[0].pred == int(sketch.pred_int8[i])
            assert msgs[0].micros >= delay_us(i)
        # decision rule at the cutoff: q0 = FT_Q0_FAULT_MAX -1/0/+1, ties, extremes
        for x, y, pred in zip(sketch.syn_x, sketch.syn_y, sketch.syn_pred):
            msgs = ask(P.encode_command("infer", x))
            assert [type(m) for m in msgs] == [P.InferResult, P.Ready]
            assert msgs[0].scores == tuple(int(v) for v in y)
            assert msgs[0].pred == int(pred), (y.tolist(), sketch.q0_max, msgs[0])
        # two commands in one write are answered one after the other, in order
        msgs = ask(cmd_with_crc("info") + cmd_with_crc("run"))
        assert [type(m) for m in msgs] == [P.Banner, P.Ready]
        msgs = dev.until_ready()
        assert [type(m) for m in msgs] == [P.Sample] * sketch.n_test + [P.Summary, P.Ready]
        assert [m.pred for m in msgs[:-2]] == [int(p) for p in sketch.pred_int8]
        summ = msgs[-2]
        c = P.confusion([m.pred for m in msgs[:-2]], [m.label for m in msgs[:-2]])
        assert {k: getattr(summ, k) for k in c} == c
        lat = P.latency_summary([m.micros for m in msgs[:-2]])
        assert (summ.lat_min, summ.lat_mean, summ.lat_p50, summ.lat_p95, summ.lat_max) == lat
        # reset: ready, then the program boots again: banner, ready
        assert ask(cmd_with_crc("reset")) == [P.Ready()]
        again = dev.until_ready()
        assert again == [b, P.Ready()]
        assert dev.stderr().count("ftshim: boot") == 2
        assert ask(b"info\n") == [b, P.Ready()]             # and it still answers
        assert all(P.parse_line(line) is not None for line in dev.lines)
        assert dev.hang_up() == 0, dev.stderr()
    finally:
        dev.close()


def test_model_setup_failure_is_reported(sketch: Sketch, tmp_path):
    """The interpreter refusing the arena at boot: the sketch says so in every answer."""
    from fedtiny.bench import bench_device
    from fedtiny.bench.rundata import BenchError

    dev = Running(sketch.exe, tmp_path / "stderr.txt",
                  env_extra={"FTSHIM_ARENA_NEED": str(sketch.arena_cfg + 1)})
    try:
        boot = dev.until_ready()
        assert [type(m) for m in boot] == [P.Banner, P.Error, P.Ready], boot
        assert boot[0].arena_bytes == 0
        assert boot[1].code == "invoke"
        assert boot[1].detail == f"AllocateTensors failed with a {sketch.arena_cfg} B arena"
        for data in (cmd_with_crc("run"), P.encode_command("infer", sketch.x_int8[0])):
            dev.send(data)
            msgs = dev.until_ready()
            assert [type(m) for m in msgs] == [P.Error, P.Ready] and msgs[0] == boot[1]
        dev.send(b"info\n")
        assert dev.until_ready() == [boot[0], P.Ready()]
        with pytest.raises(BenchError, match="device failed to run: invoke: AllocateTensors failed"):
            bench_device(dev.port, sketch.run, DEVICE, timeout=2)
        assert dev.hang_up() == 0, dev.stderr()
    finally:
        dev.close()


def _run_with_forgotten_window(sketch: Sketch, tmp_path, index: int) -> list:
    """Messages answering ``run`` when Invoke() fails on embedded window ``index``."""
    dev = Running(sketch.exe, tmp_path / "stderr.txt", env_extra={"FTSHIM_UNKNOWN": str(index)})
    try:
        assert [type(m) for m in dev.until_ready()] == [P.Banner, P.Ready]
        dev.send(cmd_with_crc("run"))
        msgs = dev.until_ready()
        assert all(P.parse_line(line) is not None for line in dev.lines)
        assert dev.hang_up() == 0, dev.stderr()
        return msgs
    finally:
        dev.close()


def test_invoke_failure_on_first_window(sketch: Sketch, tmp_path):
    msgs = _run_with_forgotten_window(sketch, tmp_path, 0)
    assert msgs == [P.Error("invoke", "Invoke failed on window 0"), P.Ready()]


def test_invoke_failure_mid_run_answers_the_samples_before_it_then_error(sketch: Sketch, tmp_path):
    """PROTOCOL.md: run streams its samples; an Invoke() failure on window i ends it with the samples
    of windows 0..i-1, then error (instead of summary), then ready."""
    msgs = _run_with_forgotten_window(sketch, tmp_path, 5)
    assert msgs[-2:] == [P.Error("invoke", "Invoke failed on window 5"), P.Ready()]
    assert [type(m) for m in msgs] == [P.Sample] * 5 + [P.Error, P.Ready], [type(m).__name__ for m in msgs]
    assert [m.index for m in msgs[:5]] == list(range(5))


@pytest.mark.parametrize("key", [("electrical", "features"), ("electrical", "spectrum"),
                                 ("mechanical", "features"), ("mechanical", "spectrum")])
def test_sketch_with_a_frontend_decides_as_the_host(key, frontend_runs, tmp_path):
    """The sketch of a front-end run embeds int16 samples and computes each model input with
    ft_frontend.h (compiled here as C++ by g++): the oracle Invoke() knows only the host's int8
    inputs (fedtiny.frontend), so every window of 'run' is answered only if the C++ front end
    reproduced the host's input exactly; then decisions and streamed scores equal the host's."""
    from fedtiny.bench import bench_device

    sk = Sketch(frontend_runs[key], "nano33ble", tmp_path / "sk", device=0)
    assert sk.manifest["frontend"] == key[1]
    assert "int16_t g_fedtiny_test_x" in (sk.proj / "src" / "test_data.cpp").read_text()
    dev = Running(sk.exe, tmp_path / "stderr.txt")
    try:
        dev.until_ready()
        res = bench_device(dev.port, sk.run, 0, stream=sk.n_test, timeout=5)
        n = sk.n_test
        assert n == len(sk.y) and n >= 5
        assert res.ok, (res.decision_mismatches, res.stream)
        assert [s["pred"] for s in res.samples] == [int(p) for p in sk.pred_int8[:n]]
        assert res.stream["max_score_lsb_diff"] == 0
        assert dev.hang_up() == 0, dev.stderr()
    finally:
        dev.close()
