/* ft_live.c: live and capture (ft_live.h; copied by fedtiny build; do not edit). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("Os")   /* protocol code: between inferences, never inside one */
#endif
#include "ft_live.h"

#include <string.h>

#include "fedtiny_config.h"
#include "ft_board.h"
#include "ft_live_config.h"
#include "ft_sensor.h"
#include "ft_stream.h"

#if FT_LIVE_HOP < 1 || FT_LIVE_HOP > FT_LIVE_WINDOW
#error "the hop must be 1 .. window samples"
#endif

#define FT_RING_FRAMES (FT_LIVE_WINDOW + FT_LIVE_HOP)
static int16_t g_ring[FT_RING_FRAMES * FT_LIVE_CHANNELS];   /* live: window, then FIFO */
static uint32_t g_ring_gap[FT_RING_FRAMES];
static int8_t g_live_scores[FT_N_CLASSES];
static ft_line_reader_t* g_rx;
static char* g_out;
static int g_cap;

static void send_line(int n) {
  if (n > 0) ft_board_write(g_out, n);
}

/* A command line received during live/capture: 1 if it is "stop" (every other line is ignored). */
static int stop_requested(void) {
  for (;;) {
    const int c = ft_board_read();
    if (c < 0) return 0;
    const int r = ft_line_feed(g_rx, (char)c);
    if (r == FT_LINE_READY && ft_parse_command(g_rx->buf, 0, 0, 0) == FT_CMD_STOP) return 1;
  }
}

/* sensor and timer on, FIFO = g_ring[first frame ...]; 0, or an error answered */
static int start_sampling(int first_frame, int capacity) {
  (void)kFtClassNames;
  ft_stream_reset(g_ring + (long)first_frame * FT_LIVE_CHANNELS, g_ring_gap, capacity, FT_LIVE_CHANNELS);
  if (ft_sensor_begin(FT_LIVE_RATE_HZ, FT_LIVE_CHANNELS) != 0) {
    send_line(ft_format_error(g_out, g_cap, FT_ERR_NO_SENSOR, "the sensor cannot give this rate and channel count"));
    return -1;
  }
  send_line(ft_format_stream(g_out, g_cap, FT_LIVE_RATE_HZ, FT_LIVE_CHANNELS, FT_LIVE_WINDOW, FT_LIVE_HOP,
                             FT_LIVE_BUDGET, FT_SENSOR_SOURCE, FT_SENSOR_SCALE, FT_SENSOR_UNIT));
  if (ft_board_sampler_start(FT_LIVE_RATE_HZ) != 0) {
    send_line(ft_format_error(g_out, g_cap, FT_ERR_NO_SENSOR, "the sampling timer cannot give this rate"));
    return -1;
  }
  return 0;
}

/* front end + model on the window in g_ring[0 .. FT_LIVE_WINDOW); its time in clock units, or -1
 * when the model failed */
static long live_infer(void) {
  const uint32_t start = ft_board_ticks();
  if (ft_live_model(g_ring, g_live_scores) != 0) return -1;
  const uint32_t ticks = (ft_board_ticks() - start) & (uint32_t)FT_BOARD_TICK_MASK;
  return (long)ticks * (long)FT_LATENCY_PER_TICK;
}

static void bind(ft_line_reader_t* rx, char* out, int out_cap) {
  g_rx = rx;
  g_out = out;
  g_cap = out_cap;
}

void ft_live_run(ft_line_reader_t* rx, char* out, int out_cap) {
  bind(rx, out, out_cap);
  if (start_sampling(FT_LIVE_WINDOW, FT_LIVE_HOP) != 0) return;
  long long n = 0;                    /* sample counter of the next frame */
  long long dropped = 0;
  long phase = 0;                     /* n mod hop */
  long beat_phase = 0;                /* n mod rate: a beat at every multiple of the rate, with the
                                         frames lost before it (the host twin's fedtiny/live.py beats) */
  int fill = 0;                       /* consecutive frames in the window buffer */
  int last = -1;                      /* the current decision (-1: none yet) */
  long us_last = 0, us_max = 0;
  while (!stop_requested()) {
    const int16_t* frame;
    uint32_t gap;
    if (!ft_stream_peek(&frame, &gap)) {
      ft_board_idle();
      continue;
    }
    if (gap != 0u) {                  /* frames lost: the windows holding them are skipped */
      long long lost = (long long)gap;
      phase = (long)((phase + lost) % FT_LIVE_HOP);
      fill = 0;
      while (beat_phase + lost >= FT_LIVE_RATE_HZ) {   /* a beat falls inside the gap: at its n */
        const long step = FT_LIVE_RATE_HZ - beat_phase;
        n += step;
        dropped += step;
        lost -= step;
        beat_phase = 0;
        send_line(ft_format_beat(g_out, g_cap, n, last, dropped, us_last, us_max, FT_LIVE_BUDGET));
      }
      n += lost;
      dropped += lost;
      beat_phase += (long)lost;
    }
    if (fill > 0 || phase == 0) {     /* a window starts at a multiple of the hop */
      int16_t* dst = g_ring + (long)fill * FT_LIVE_CHANNELS;
      for (int c = 0; c < FT_LIVE_CHANNELS; ++c) dst[c] = frame[c];
      fill += 1;
    }
    ft_stream_release();
    n += 1;
    phase = phase + 1 == FT_LIVE_HOP ? 0 : phase + 1;
    beat_phase += 1;
    if (fill == FT_LIVE_WINDOW) {     /* window [n - win, n) is complete */
      const long us = live_infer();
      if (us < 0) {
        ft_board_sampler_stop();
        send_line(ft_format_error(g_out, g_cap, FT_ERR_INVOKE, "the model failed on a live window"));
        return;
      }
      const int pred = ft_decide_q(g_live_scores, FT_N_CLASSES, FT_Q0_FAULT_MAX);
      us_last = us;
      if (us > us_max) us_max = us;
      if (pred != last) {
        const float score = ft_fault_score(g_live_scores[0], FT_OUTPUT_SCALE, FT_OUTPUT_ZERO_POINT);
        send_line(ft_format_event(g_out, g_cap, n, pred, score, FT_THRESHOLD, us));
        last = pred;
      }
      memmove(g_ring, g_ring + (long)FT_LIVE_HOP * FT_LIVE_CHANNELS,
              sizeof(int16_t) * (size_t)(FT_LIVE_WINDOW - FT_LIVE_HOP) * FT_LIVE_CHANNELS);
      fill = FT_LIVE_WINDOW - FT_LIVE_HOP;
    }
    if (beat_phase == FT_LIVE_RATE_HZ) {   /* n is a multiple of the rate: one second of samples */
      beat_phase = 0;
      send_line(ft_format_beat(g_out, g_cap, n, last, dropped, us_last, us_max, FT_LIVE_BUDGET));
    }
  }
  ft_board_sampler_stop();
}

#define FT_LINE_FRAMES (FT_FRAMES_MAX_VALUES / FT_LIVE_CHANNELS)
static int16_t g_line[FT_LINE_FRAMES * FT_LIVE_CHANNELS];

void ft_live_capture(ft_line_reader_t* rx, char* out, int out_cap, long count) {
  bind(rx, out, out_cap);
  if (start_sampling(0, FT_RING_FRAMES) != 0) return;
  const long long end = count > 0 ? (long long)count : -1;   /* -1: until stop */
  long long n = 0, sent = 0, dropped = 0, line_first = 0;
  int in_line = 0, stopping = 0;
  for (;;) {
    if (end >= 0 && n >= end) break;
    if (!stopping && stop_requested()) {
      ft_board_sampler_stop();        /* what is stored still goes out; nothing new comes in */
      stopping = 1;
    }
    const int16_t* frame;
    uint32_t gap;
    if (!ft_stream_peek(&frame, &gap)) {
      if (!stopping && end >= 0 && n + (long long)ft_stream_pending_gap() >= end) {
        ft_board_sampler_stop();      /* every frame still to come is lost: nothing will be stored */
        stopping = 1;
      }
      if (!stopping) {
        ft_board_idle();
        continue;
      }
      gap = ft_stream_pending_gap();  /* frames lost after the last stored one */
      frame = 0;
      if (gap == 0u) break;
    }
    if (gap != 0u) {
      long long lost = (long long)gap;
      if (end >= 0 && n + lost > end) lost = end - n;
      if (in_line) send_line(ft_format_frames(g_out, g_cap, line_first, in_line, FT_LIVE_CHANNELS, g_line));
      in_line = 0;
      send_line(ft_format_gap(g_out, g_cap, n, lost));
      dropped += lost;
      n += lost;
      if (frame == 0 || (end >= 0 && n >= end)) break;
    }
    if (in_line == 0) line_first = n;
    int16_t* dst = g_line + (long)in_line * FT_LIVE_CHANNELS;
    for (int c = 0; c < FT_LIVE_CHANNELS; ++c) dst[c] = frame[c];
    ft_stream_release();
    in_line += 1;
    n += 1;
    sent += 1;
    if (in_line == FT_LINE_FRAMES || (end >= 0 && n >= end)) {
      send_line(ft_format_frames(g_out, g_cap, line_first, in_line, FT_LIVE_CHANNELS, g_line));
      in_line = 0;
    }
  }
  ft_board_sampler_stop();
  if (in_line) send_line(ft_format_frames(g_out, g_cap, line_first, in_line, FT_LIVE_CHANNELS, g_line));
  send_line(ft_format_capend(g_out, g_cap, sent, dropped));
}
