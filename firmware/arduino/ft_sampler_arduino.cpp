// ft_sampler_arduino.cpp: the sampling timer of a live firmware on an Arduino board (copied by
// fedtiny build --input sensor; do not edit). ft_board.h's sampler_start / sampler_stop / idle.
//
// The timer interrupt only counts sample periods (g_due). The main loop reads one frame per
// counted period (ft_stream_tick -> ft_sensor_read) whenever it waits for a frame (ft_board_idle)
// and when sampling stops, so sensor reads never run in an interrupt: the IMU libraries talk I2C
// through mbed's Wire, which must not be used from an interrupt, and the ESP32 core's analogRead
// takes a lock. Frames of periods counted while the loop was busy (the model, a blocked serial
// port) are read when it comes back, late by at most that time; the FIFO (ft_stream.c) stores what
// fits and counts the rest as dropped, so the sample counter n stays the number of periods.
//
// Timers (rate_hz must divide 1 MHz, checked at build time: boards/*.json timer_clock_hz):
//   Nano 33 BLE (Arduino mbed core, ARDUINO_ARCH_MBED): mbed::Ticker at 1000000 / rate_hz us.
//   ESP32 (Arduino-ESP32 3.x, ARDUINO_ARCH_ESP32; the board file pins core 3.3.5): a hardware
//   timer at 1 MHz, timerBegin(1000000) / timerAttachInterrupt / timerAlarm(period, autoreload).
#include <Arduino.h>

#include "ft_board.h"
#include "ft_stream.h"

#if defined(ARDUINO_ARCH_MBED)
#include <mbed.h>
#define FT_TICK_ISR
static mbed::Ticker g_ticker;
#elif defined(ARDUINO_ARCH_ESP32)
#define FT_TICK_ISR IRAM_ATTR
static hw_timer_t* g_timer = nullptr;
#else
#error "ft_sampler_arduino.cpp has a sampling timer for the Arduino mbed core and Arduino-ESP32 3.x only"
#endif

static volatile uint32_t g_due;   // periods counted by the interrupt (written there only)
static uint32_t g_done;           // periods whose frame the loop has read
static bool g_running;

static void FT_TICK_ISR on_tick() { g_due = g_due + 1u; }

// one frame for every period counted so far
static void read_due_frames() {
  const uint32_t due = g_due;
  while (g_done != due) {
    g_done += 1u;
    ft_stream_tick();
  }
}

extern "C" {

int ft_board_sampler_start(long rate_hz) {
  if (g_running || rate_hz <= 0 || 1000000L % rate_hz != 0) return -1;
  const long period_us = 1000000L / rate_hz;
  g_done = g_due;
#if defined(ARDUINO_ARCH_MBED)
  g_ticker.attach(&on_tick, std::chrono::microseconds(period_us));
#else
  g_timer = timerBegin(1000000);
  if (g_timer == nullptr) return -1;
  timerAttachInterrupt(g_timer, &on_tick);
  timerAlarm(g_timer, static_cast<uint64_t>(period_us), true, 0);
#endif
  g_running = true;
  return 0;
}

void ft_board_sampler_stop(void) {
  if (!g_running) return;
#if defined(ARDUINO_ARCH_MBED)
  g_ticker.detach();
#else
  timerEnd(g_timer);
  g_timer = nullptr;
#endif
  g_running = false;
  read_due_frames();   // every period counted before the stop gets its frame (stored or dropped)
}

void ft_board_idle(void) {
  if (g_due == g_done) yield();   // nothing counted yet: let the core run, then look again
  read_due_frames();
}

}  // extern "C"
