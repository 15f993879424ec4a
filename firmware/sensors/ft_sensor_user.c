/* ft_sensor_user.c: YOUR sensor (generated once by fedtiny build --input sensor --sensor user;
 * this is the one file to fill in).
 *
 * The firmware calls ft_sensor_begin at the start of every "live" and "capture", then
 * ft_sensor_read once per sample period from the sampling timer's interrupt. Fill `frame` with
 * FT_LIVE_CHANNELS int16 values, in the order of the channels the model was trained on, in the
 * front end's units: count = round(value / full_scale * 32767), clipped to -32767..32767, where
 * full_scale is the physical value the model sees as 1.0 (device.json "channel_scale").
 *
 * Rules (ft_sensor_read runs in interrupt context): return quickly, never block, never wait
 * for a bus transaction that needs interrupts (start conversions ahead and read finished ones),
 * no printing. Return 0 when the frame holds a sample, nonzero when none was ready (the frame
 * is then counted as dropped and the host sees a gap).
 *
 * The definitions below are weak: until you replace them, every frame is "not ready", so
 * "live" makes no decision and "capture" reports only gaps.
 */
#include "ft_sensor.h"

#include "ft_live_config.h"

__attribute__((weak)) int ft_sensor_begin(long rate_hz, int channels) {
  /* e.g. configure the ADC / IMU for rate_hz and `channels` values; return nonzero if it cannot */
  return (rate_hz == FT_LIVE_RATE_HZ && channels == FT_LIVE_CHANNELS) ? 0 : -1;
}

__attribute__((weak)) int ft_sensor_read(int16_t* frame) {
  /* e.g. for (int c = 0; c < FT_LIVE_CHANNELS; ++c) frame[c] = latest_count[c]; return 0; */
  (void)frame;
  return 1;
}
