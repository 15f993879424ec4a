"""Stand-in headers for building generated firmware as a host program (the sketch-on-host and
compiled-runtime tests): ``Serial`` is the program's fd 0 / fd 1, the master side of a pty; each
test's own shim source defines what it uses."""

ARDUINO_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
// Host stand-in: Serial is fd 0 (read) / fd 1 (write) of the program, the master side of a pty.
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
