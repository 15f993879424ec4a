/* ft_sensor_sim.c: the simulated sensor of a qemu-m4 live firmware (copied by fedtiny build; do
 * not edit). It plays the int16 recording that fedtiny build embedded (sensor_recording.c), one
 * frame per timer interrupt, from its first frame at every ft_sensor_begin, and starts over at
 * its end. */
#include "ft_sensor.h"

#include "ft_live_config.h"
#include "sensor_recording.h"

#if FT_RECORDING_CHANNELS != FT_LIVE_CHANNELS
#error "the embedded recording and the live config disagree on the channels"
#endif

static long g_next;

int ft_sensor_begin(long rate_hz, int channels) {
  g_next = 0;
  return (rate_hz == FT_LIVE_RATE_HZ && channels == FT_RECORDING_CHANNELS && FT_RECORDING_FRAMES > 0) ? 0 : -1;
}

int ft_sensor_read(int16_t* frame) {
  const int16_t* src = g_ft_recording + g_next * FT_RECORDING_CHANNELS;
  for (int c = 0; c < FT_RECORDING_CHANNELS; ++c) frame[c] = src[c];
  g_next = g_next + 1 == FT_RECORDING_FRAMES ? 0 : g_next + 1;
  return 0;
}
