"""Stand-in headers for building generated firmware as a host program (the sketch-on-host,
compiled-runtime and live Arduino tests): each test's own shim source defines what it uses
(``Serial`` on fd 0 / fd 1 of a pty, or the scripted world of ``LIVE_WORLD_CPP``)."""

ARDUINO_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
// Host stand-in: the test's shim defines Serial (fd 0 / fd 1 on a pty, or a script) and the rest.
struct FakeSerial {
  void begin(unsigned long) {}
  explicit operator bool() const { return true; }
  int available();
  int read();
  size_t write(const uint8_t* data, size_t n);
  void flush() {}
};
extern FakeSerial Serial;
unsigned long micros();
unsigned long millis();
void delay(unsigned long ms);
[[noreturn]] void NVIC_SystemReset();
struct FakeEsp { [[noreturn]] void restart(); };
extern FakeEsp ESP;
"""


# ---------------------------------------------------------------------------------------------
# A scripted, deterministic Arduino for live firmware (tests/test_live_arduino_host.py): time is
# counted in sample periods of a fake hardware timer. The timer's interrupt handler (an
# mbed::Ticker callback or an ESP32 timerAttachInterrupt function) runs once per period;
# yield() lasts one period; a write "blocks" for a given number of periods after a given byte
# (the host stall); commands arrive at given periods. The fake IMU and ADC play a recording:
# the k-th frame read (one readAcceleration [+ readGyroscope], or one analogRead per pin) is row
# k of it, so frame index = read index exactly. argv: recording.bin rows cols stall_at_byte
# stall_periods "cmd@period" ...; the recording holds float32 readings (IMU) or uint16 codes (ADC).

LIVE_ARDUINO_H = ARDUINO_H + r"""
// and what the live glue calls of the Arduino mbed core / Arduino-ESP32 3.x
#define IRAM_ATTR
void yield();
#ifdef __cplusplus
extern "C" {
#endif
typedef enum { ADC_0db, ADC_2_5db, ADC_6db, ADC_11db, ADC_ATTENDB_MAX } adc_attenuation_t;
uint16_t analogRead(uint8_t pin);
void analogReadResolution(uint8_t bits);
void analogSetPinAttenuation(uint8_t pin, adc_attenuation_t attenuation);
struct timer_struct_t;
typedef struct timer_struct_t hw_timer_t;
hw_timer_t* timerBegin(uint32_t frequency);
void timerEnd(hw_timer_t* timer);
void timerAttachInterrupt(hw_timer_t* timer, void (*userFunc)(void));
void timerAlarm(hw_timer_t* timer, uint64_t alarm_value, bool autoreload, uint64_t reload_count);
#ifdef __cplusplus
}
#endif
"""

MBED_H = r"""
#pragma once
#include <chrono>
namespace mbed {
// the signatures fedtiny calls (mbed OS 6 Ticker: attach(F&&, std::chrono::microseconds), detach())
class Ticker {
 public:
  void attach(void (*func)(), std::chrono::microseconds t);
  void detach();
};
}
"""

IMU_H = r"""
#pragma once
// the signatures of Arduino_LSM9DS1 1.1.1 / Arduino_BMI270_BMM150 1.2.3 that fedtiny calls
class FakeImu {
 public:
  int begin();
  int readAcceleration(float& x, float& y, float& z);
  int readGyroscope(float& x, float& y, float& z);
};
extern FakeImu IMU;
"""

LIVE_WORLD_CPP = r"""
#include <Arduino.h>
#include <chrono>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mbed.h>
#include "fake_imu.h"
#include "ft_live_config.h"

void setup();
void loop();

FakeSerial Serial;
FakeEsp ESP;
FakeImu IMU;

static long g_period, g_bytes, g_stall_at = -1, g_stall_periods;
static char** g_cmds; static int g_ncmds, g_cmd, g_pos;
static void (*g_isr)() = nullptr;
static float* g_readings; static uint16_t* g_codes; static long g_rows; static int g_cols;
static long g_k;                      // frames read so far
static int g_adc_next;                // next channel of the frame being read
static int g_atten_set[64]; static int g_resolution;

static void elapse(long periods) {
  for (long k = 0; k < periods; ++k) { g_period++; if (g_isr) g_isr(); }
}
[[noreturn]] static void fail(const char* what) { fprintf(stderr, "fakeworld: %s\n", what); exit(5); }

int FakeSerial::available() {
  if (g_cmd >= g_ncmds) return 0;
  const char* at = strchr(g_cmds[g_cmd], '@');
  return g_period >= atol(at + 1) ? 1 : 0;
}
int FakeSerial::read() {
  if (!available()) return -1;
  const char* c = g_cmds[g_cmd];
  const char* at = strchr(c, '@');
  if (c + g_pos < at) return (unsigned char)c[g_pos++];
  g_cmd++; g_pos = 0;
  return '\n';
}
size_t FakeSerial::write(const uint8_t* data, size_t n) {
  fwrite(data, 1, n, stdout);
  for (size_t i = 0; i < n; ++i) if (++g_bytes == g_stall_at) elapse(g_stall_periods);
  return n;
}
unsigned long micros() { return (unsigned long)(g_period * (1000000L / FT_LIVE_RATE_HZ)); }
unsigned long millis() { return micros() / 1000ul; }
void delay(unsigned long) {}
void yield() { elapse(1); }
void NVIC_SystemReset() { exit(3); }
void FakeEsp::restart() { exit(3); }

// the mbed core's Ticker
void mbed::Ticker::attach(void (*func)(), std::chrono::microseconds t) {
  fprintf(stderr, "fakeworld: ticker %lld us\n", (long long)t.count());
  if (t.count() * FT_LIVE_RATE_HZ != 1000000) fail("ticker period is not the model rate");
  g_isr = func;
}
void mbed::Ticker::detach() { g_isr = nullptr; }

// the ESP32 core's timer and ADC
struct timer_struct_t { uint32_t frequency; };
static timer_struct_t g_timer;
hw_timer_t* timerBegin(uint32_t frequency) { g_timer.frequency = frequency; return &g_timer; }
void timerEnd(hw_timer_t*) { g_isr = nullptr; }
void timerAttachInterrupt(hw_timer_t*, void (*f)(void)) { g_isr = f; }
void timerAlarm(hw_timer_t* t, uint64_t alarm, bool autoreload, uint64_t) {
  fprintf(stderr, "fakeworld: timer %u Hz alarm %llu autoreload %d\n", t->frequency, (unsigned long long)alarm,
          (int)autoreload);
  if (!autoreload || alarm * FT_LIVE_RATE_HZ != t->frequency) fail("timer alarm is not the model rate");
}
void analogReadResolution(uint8_t bits) { g_resolution = bits; }
void analogSetPinAttenuation(uint8_t pin, adc_attenuation_t a) { if (pin < 64) g_atten_set[pin] = (int)a + 1; }
uint16_t analogRead(uint8_t pin) {
#ifdef FT_ADC_PINS
  static const uint8_t pins[FT_LIVE_CHANNELS] = FT_ADC_PINS;
  if (g_resolution != 12 || pin >= 64 || g_atten_set[pin] != (int)FT_ADC_ATTENUATION + 1) fail("ADC not set up");
  if (pin != pins[g_adc_next]) fail("ADC pins read out of channel order");
#endif
  if (g_codes == nullptr) fail("no ADC recording");
  const uint16_t v = g_codes[(g_k % g_rows) * g_cols + g_adc_next];
  if (++g_adc_next == g_cols) { g_adc_next = 0; g_k++; }
  return v;
}

// the IMU: row k = ax ay az [gx gy gz]
int FakeImu::begin() { return g_readings != nullptr; }
int FakeImu::readAcceleration(float& x, float& y, float& z) {
  const float* r = g_readings + (g_k % g_rows) * g_cols;
  x = r[0]; y = r[1]; z = r[2];
  if (g_cols == 3) g_k++;
  return 1;
}
int FakeImu::readGyroscope(float& x, float& y, float& z) {
  const float* r = g_readings + (g_k % g_rows) * g_cols;
  x = r[3]; y = r[4]; z = r[5];
  g_k++;
  return 1;
}

int main(int argc, char** argv) {
  FILE* f = fopen(argv[1], "rb");
  g_rows = atol(argv[2]); g_cols = atoi(argv[3]);
  const int adc = getenv("FAKE_ADC") != nullptr;
  const size_t n = (size_t)g_rows * (size_t)g_cols;
  if (adc) { g_codes = (uint16_t*)malloc(n * 2); if (fread(g_codes, 2, n, f) != n) fail("short recording"); }
  else { g_readings = (float*)malloc(n * 4); if (fread(g_readings, 4, n, f) != n) fail("short recording"); }
  fclose(f);
  g_stall_at = atol(argv[4]); g_stall_periods = atol(argv[5]);
  g_cmds = argv + 6; g_ncmds = argc - 6;
  setup();
  while (g_cmd < g_ncmds) { loop(); elapse(1); }
  loop();
  fflush(stdout);
  return 0;
}
"""
