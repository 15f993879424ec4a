// ft_sensor_adc.cpp: ESP32 ADC1 pins as the live sensor (copied by fedtiny build --input sensor
// --sensor adc; do not edit). One pin per model channel, in the model's channel order
// (ft_live_config.h FT_ADC_PINS, from boards/esp32dev.json), each with the board file's
// attenuation (FT_ADC_ATTENUATION, an adc_attenuation_t of the Arduino-ESP32 3.x core) and 12-bit
// raw codes (analogReadResolution(12): analogRead returns the uncalibrated code 0..4095).
// count = clip((code - FT_ADC_ZERO_CODE) * FT_ADC_COUNTS_PER_CODE, -32767, 32767): the mid-scale
// code is the model's 0 and the ADC's half range its +-1.0, so the wiring must bias each signal
// to mid-scale and bring the channel's full scale (device.json channel_scale) to the ADC's half
// range. Host twin: fedtiny.live.adc_counts.
#include <Arduino.h>

#include "ft_live_config.h"
#include "ft_sensor.h"

static const uint8_t kPins[FT_LIVE_CHANNELS] = FT_ADC_PINS;

extern "C" int ft_sensor_begin(long rate_hz, int channels) {
  if (rate_hz != FT_LIVE_RATE_HZ || channels != FT_LIVE_CHANNELS) return -1;
  analogReadResolution(12);
  for (int c = 0; c < FT_LIVE_CHANNELS; ++c) analogSetPinAttenuation(kPins[c], FT_ADC_ATTENUATION);
  return 0;
}

extern "C" int ft_sensor_read(int16_t* frame) {
  for (int c = 0; c < FT_LIVE_CHANNELS; ++c) {
    const long v = (static_cast<long>(analogRead(kPins[c])) - FT_ADC_ZERO_CODE) * FT_ADC_COUNTS_PER_CODE;
    frame[c] = static_cast<int16_t>(v > 32767 ? 32767 : v < -32767 ? -32767 : v);
  }
  return 0;
}
