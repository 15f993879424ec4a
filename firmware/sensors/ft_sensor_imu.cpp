// ft_sensor_imu.cpp: the Nano 33 BLE's onboard IMU as the live sensor (copied by fedtiny build
// --input sensor --sensor imu; do not edit). The board revision's Arduino library (ft_live_config.h
// FT_IMU_HEADER: Arduino_LSM9DS1.h on rev1, Arduino_BMI270_BMM150.h on rev2; platformio.ini pins
// it) provides the global IMU. Channels 0-2: acceleration x, y, z in g; 3-5: angular rate x, y, z
// in degrees/s. Both libraries run the chip in one-shot mode (the output registers hold the latest
// sample, 119 Hz on the LSM9DS1, 100 Hz on the BMI270), so each read takes the newest sample:
// the model rate must not exceed the chip's rate (boards/nano33ble.json max_rate_hz).
// count = ft_sensor_count(value, FT_SENSOR_FULL_SCALE[c]) (ft_sensor.h; host twin
// fedtiny.live.sensor_counts).
#include <Arduino.h>

#include "ft_live_config.h"
#include "ft_sensor.h"
#include FT_IMU_HEADER

#if FT_LIVE_CHANNELS != 3 && FT_LIVE_CHANNELS != 6
#error "the IMU gives 3 channels (acceleration) or 6 (acceleration, then angular rate)"
#endif

static const double kFullScale[FT_LIVE_CHANNELS] = FT_SENSOR_FULL_SCALE;
static bool g_started;

extern "C" int ft_sensor_begin(long rate_hz, int channels) {
  if (rate_hz != FT_LIVE_RATE_HZ || channels != FT_LIVE_CHANNELS) return -1;
  if (!g_started) g_started = IMU.begin() != 0;   // 0: the chip did not answer (wrong revision?)
  return g_started ? 0 : -1;
}

extern "C" int ft_sensor_read(int16_t* frame) {
  float v[6];
  if (!IMU.readAcceleration(v[0], v[1], v[2])) return 1;
#if FT_LIVE_CHANNELS == 6
  if (!IMU.readGyroscope(v[3], v[4], v[5])) return 1;
#endif
  for (int c = 0; c < FT_LIVE_CHANNELS; ++c) frame[c] = ft_sensor_count(v[c], kFullScale[c]);
  return 0;
}
