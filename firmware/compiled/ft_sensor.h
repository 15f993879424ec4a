/* ft_sensor.h: the sensor a live firmware reads (copied by fedtiny build; do not edit).
 *
 * One frame = one int16 per channel, in the run's channel order and the front end's int16 units
 * (model units x 32767: fedtiny/frontend.py); FT_SENSOR_SCALE (ft_live_config.h) converts a count
 * to FT_SENSOR_UNIT. The board's sampling timer calls ft_sensor_read once per sample period, in
 * interrupt context (through ft_stream_tick), so it must be short and must not block.
 * Implementations: sim (qemu-m4: an embedded recording, ft_sensor_sim.c), imu (Nano 33 BLE), adc
 * (ESP32), user (ft_sensor_user.c: the user fills it in).
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

#ifdef __cplusplus
}
#endif

#endif /* FT_SENSOR_H */
