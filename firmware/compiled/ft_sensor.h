/* ft_sensor.h: the sensor a live firmware reads (copied by fedtiny build; do not edit).
 *
 * One frame = one int16 per channel, in the run's channel order and the front end's int16 units
 * (model units x 32767: fedtiny/frontend.py); FT_SENSOR_SCALE (ft_live_config.h) converts a count
 * to FT_SENSOR_UNIT. ft_sensor_read is called once per sample period through ft_stream_tick: on
 * qemu-m4 from the sampling timer's interrupt; on the Arduino boards from the main loop, once for
 * every period the timer interrupt counted (ft_sampler_arduino.cpp), so an I2C read is allowed
 * there. Either way it must be short.
 * Implementations: sim (qemu-m4: an embedded recording, ft_sensor_sim.c), imu (Nano 33 BLE,
 * ft_sensor_imu.cpp), adc (ESP32, ft_sensor_adc.cpp), user (ft_sensor_user.c: the user fills it in).
 */
#ifndef FT_SENSOR_H
#define FT_SENSOR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prepare the sensor for `channels` values at `rate_hz` frames per second; called at the start of
 * every live/capture. 0 on success; nonzero when the sensor cannot give that (the firmware then
 * answers error code=no_sensor). */
int ft_sensor_begin(long rate_hz, int channels);

/* One frame into frame[0..channels); 0 on success, nonzero if no sample was available (the frame
 * is then counted as dropped). */
int ft_sensor_read(int16_t* frame);

/* A physical reading as a count: round_half_away(value / full_scale * 32767) (double), clipped to
 * -32767..32767, where full_scale is the physical value the model sees as 1.0 (device.json
 * channel_scale). 0 when value is not a number. Host twin: fedtiny.live.sensor_counts. */
static inline int16_t ft_sensor_count(double value, double full_scale) {
  const double v = value / full_scale * 32767.0;
  if (!(v == v)) return 0;
  if (v >= 32767.0) return 32767;
  if (v <= -32767.0) return -32767;
  return (int16_t)(long)(v >= 0.0 ? v + 0.5 : v - 0.5);
}

#ifdef __cplusplus
}
#endif

#endif /* FT_SENSOR_H */
