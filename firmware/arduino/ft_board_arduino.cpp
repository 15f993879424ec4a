// ft_board_arduino.cpp: ft_board.h on an Arduino board (copied by fedtiny build; do not edit):
// Serial, micros() and the board's reset call (FT_BOARD_RESET() in ft_board_config.h). Used by the
// compiled runtime (with main.cpp = firmware/compiled/arduino_main.cpp) and by a TFLM sketch with
// sensor input (ft_live.c writes its lines and reads "stop" through it).
#include <Arduino.h>

#include "ft_board.h"
#include "ft_board_config.h"

extern "C" {

void ft_board_init(void) {
  Serial.begin(FT_BOARD_BAUD);
#if FT_BOARD_SERIAL_WAIT_MS > 0
  unsigned long start = millis();   // native USB: let the host open the port before the banner
  while (!Serial && millis() - start < FT_BOARD_SERIAL_WAIT_MS) delay(10);
#endif
}

int ft_board_read(void) { return Serial.available() > 0 ? Serial.read() : -1; }

void ft_board_write(const char* data, int n) {
  if (n > 0) Serial.write(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n));
}

void ft_board_flush(void) { Serial.flush(); }

uint32_t ft_board_ticks(void) { return static_cast<uint32_t>(micros()); }

void ft_board_reset(void) {
  delay(50);
  FT_BOARD_RESET();
}

}  // extern "C"
