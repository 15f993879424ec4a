/* ft_stream.c: the sample FIFO (ft_stream.h; copied by fedtiny build; do not edit). */
#include "ft_stream.h"

#include "ft_sensor.h"

static int16_t* g_buf;
static uint32_t* g_gap_before;
static int g_cap;
static int g_channels;
static int g_write;                        /* interrupt: next slot to fill */
static int g_read;                         /* main loop: oldest stored slot */
static volatile uint32_t g_stored;         /* written by the interrupt only */
static volatile uint32_t g_consumed;       /* written by the main loop only */
static volatile uint32_t g_pending_gap;    /* interrupt: frames dropped since the last stored one */

void ft_stream_reset(int16_t* buf, uint32_t* gap_before, int capacity, int channels) {
  g_buf = buf;
  g_gap_before = gap_before;
  g_cap = capacity;
  g_channels = channels;
  g_write = g_read = 0;
  g_stored = g_consumed = 0u;
  g_pending_gap = 0u;
}

/* Where a frame goes when the FIFO is full: it is still read (the sensor moves on in time, and
 * the sample counter stays the sensor's), then lost. */
static int16_t g_scratch[16];

void ft_stream_tick(void) {
  if (g_buf == 0) return;
  if (g_stored - g_consumed >= (uint32_t)g_cap) {   /* full: the frame is lost */
    if (g_channels <= 16) (void)ft_sensor_read(g_scratch);
    g_pending_gap = g_pending_gap + 1u;
    return;
  }
  if (ft_sensor_read(g_buf + (long)g_write * g_channels) != 0) {   /* no sample this period */
    g_pending_gap = g_pending_gap + 1u;
    return;
  }
  g_gap_before[g_write] = g_pending_gap;
  g_pending_gap = 0u;
  g_write = g_write + 1 == g_cap ? 0 : g_write + 1;
  __asm__ volatile("" ::: "memory");               /* the frame is written before it is published */
  g_stored = g_stored + 1u;
}

int ft_stream_peek(const int16_t** frame, uint32_t* gap) {
  if (g_stored == g_consumed) return 0;
  __asm__ volatile("" ::: "memory");
  *frame = g_buf + (long)g_read * g_channels;
  *gap = g_gap_before[g_read];
  return 1;
}

void ft_stream_release(void) {
  g_read = g_read + 1 == g_cap ? 0 : g_read + 1;
  __asm__ volatile("" ::: "memory");
  g_consumed = g_consumed + 1u;
}

uint32_t ft_stream_pending_gap(void) { return g_pending_gap; }
