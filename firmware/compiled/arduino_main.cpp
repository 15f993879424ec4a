// main.cpp: fedtiny firmware (compiled runtime) for an Arduino board (copied by fedtiny build;
// do not edit). The protocol application (fedtiny_app.c) and the model (ft_model.c) are plain C;
// the board is ft_board_arduino.cpp (Serial, micros(), reset). No TFLM library is needed.
#include <Arduino.h>

#include "ft_board.h"

void setup() { ft_app_setup(); }

void loop() { ft_app_poll(); }
