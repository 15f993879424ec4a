/* fedtiny_app.c: the fedtiny serial protocol v3 around the compiled model (copied by fedtiny
 * build; do not edit). The same conversation as the TFLM sketch (codegen/templates/main.cpp.j2)
 * from the same protocol header: at boot "banner" then "ready"; "info", "run", "infer <hex>",
 * "reset"; every failure an "error" line, then "ready" (firmware/PROTOCOL.md).
 *
 * With a front end (ft_frontend_config.h: FT_FRONTEND_KIND other than FT_FRONTEND_RAW) the
 * embedded test windows are int16 samples and "run" computes each model input with
 * ft_frontend_run (the host twin: fedtiny/frontend.py); "infer" still takes the model input.
 *
 * Built with --trainable-head (ft_head_config.h: FT_HEAD_TRAINABLE 1) it also answers the head
 * commands (head, hclear, hinit, hput, hadd, htrain, hweights, hload, hthr, heval; ft_head.h): windows
 * sent in hput chunks are checked (CRC-16), run through the extractor (ft_model_features) and kept
 * as features; the float32 head trains on them. Without it every head command answers no_head.
 *
 * Latency: ticks of ft_board_ticks() around ft_model_invoke(), times FT_LATENCY_PER_TICK, in the
 * unit the banner's clock names (clock=device: microseconds; clock=icount: instructions counted
 * by QEMU -icount shift=0, ft_board_config.h).
 *
 * Live firmware (FT_LIVE, fedtiny build --input sensor; banner input=sensor): "live" and
 * "capture N" are ft_live.c's (the same code as the TFLM sketch's); this file supplies its model
 * step, ft_live_model (front end + compiled model on one window).
 */
#if defined(__GNUC__) && !defined(__clang__)
/* The protocol code runs between inferences, never inside one: optimized for size (about 4 KB
 * less flash on Cortex-M4 than -O2); the model (ft_model.c) keeps the build's -O2. */
#pragma GCC optimize("Os")
#endif
#include <stdint.h>
#include <string.h>

#include "ft_board_config.h"   /* FT_CLOCK, FT_LATENCY_PER_TICK: before the protocol header */
#include "fedtiny_protocol.h"
#include "fedtiny_config.h"
#include "ft_board.h"
#include "ft_model.h"
#include "ft_frontend_config.h"
#include "test_data.h"
#if FT_LIVE
#include "ft_live_config.h"
#include "ft_live.h"
#endif
#include "ft_head_config.h"
#if FT_HEAD_TRAINABLE
#include "ft_head.h"
#if FT_MODEL_FEATURE_BYTES != FT_HEAD_IN
#error "the model's feature tensor and the head disagree on the number of features"
#endif
#endif

#if FT_CONFIG_PROTOCOL_VERSION != FT_PROTOCOL_VERSION
#error "fedtiny_config.h and fedtiny_protocol.h disagree on the protocol version"
#endif
#if FT_FRONTEND_KIND == FT_FRONTEND_RAW
#if FT_TEST_WINDOW_BYTES != FT_INPUT_BYTES
#error "test windows and config disagree on the input size"
#endif
#elif FT_TEST_WINDOW_VALUES != FT_FRONTEND_WINDOW_VALUES || FT_FRONTEND_N_FEATURES != FT_INPUT_BYTES
#error "test windows, front end and config disagree on the window or input size"
#endif
#if FT_MODEL_INPUT_BYTES != FT_INPUT_BYTES
#error "model input and config disagree on the input size"
#endif
#if FT_MODEL_OUTPUT_BYTES != FT_N_CLASSES
#error "model output and config disagree on the number of classes"
#endif

static ft_line_reader_t g_rx;
static char g_out[FT_OUT_MAX_LINE];
static char g_detail[96];
/* The infer payload is decoded in place into the line buffer it arrived in (byte i is written
 * at offset i, after the two hex digits at offset >= 6 + 2i were read), with the protocol's own
 * cap FT_INFER_MAX_PAYLOAD: the error codes stay those of every other fedtiny device, and the
 * firmware saves a 2 KB payload buffer. */
#define g_payload ((int8_t*)g_rx.buf)
static int8_t g_scores[FT_N_CLASSES];
static long g_latency[FT_N_TEST > 0 ? FT_N_TEST : 1];

static void send_line(int n) {
  if (n > 0) ft_board_write(g_out, n);
}

static void send_ready(void) { send_line(ft_format_ready(g_out, (int)sizeof g_out)); }

static void send_error(const char* code, const char* detail) {
  send_line(ft_format_error(g_out, (int)sizeof g_out, code, detail));
}

static void send_banner(void) {
  (void)kFtClassNames;
  send_line(ft_format_banner(g_out, (int)sizeof g_out, FT_BOARD, FT_DEVICE_ID, FT_MODEL_SHA256,
                             FT_ARENA_BYTES, FT_THRESHOLD, FT_THRESHOLD_ORIGIN, FT_N_TEST,
                             FT_N_CLASSES));
}

/* appends the decimal digits of v to s at *pos (no printf: see fedtiny_protocol.h) */
static void put_int(char* s, int* pos, int cap, long v) {
  char tmp[12];
  int n = 0;
  unsigned long mag = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;
  if (v < 0 && *pos < cap - 1) s[(*pos)++] = '-';
  do { tmp[n++] = (char)('0' + (int)(mag % 10u)); mag /= 10u; } while (mag != 0u && n < 12);
  while (n > 0 && *pos < cap - 1) s[(*pos)++] = tmp[--n];
  s[*pos] = '\0';
}

static void put_str(char* s, int* pos, int cap, const char* t) {
  while (*t && *pos < cap - 1) s[(*pos)++] = *t++;
  s[*pos] = '\0';
}

/* one timed inference; the latency in FT_LATENCY_PER_TICK units */
static long invoke_window(const int8_t* window) {
  const uint32_t start = ft_board_ticks();
  ft_model_invoke(window, g_scores);
  const uint32_t ticks = (ft_board_ticks() - start) & (uint32_t)FT_BOARD_TICK_MASK;
  return (long)ticks * (long)FT_LATENCY_PER_TICK;
}

/* the model input of embedded test window i */
#if FT_FRONTEND_KIND == FT_FRONTEND_RAW
static const int8_t* test_input(int i) { return g_fedtiny_test_x + (long)i * FT_INPUT_BYTES; }
#else
static int8_t g_fe_input[FT_INPUT_BYTES];
static const int8_t* test_input(int i) {
  ft_frontend_run(&kFtFrontend, g_fedtiny_test_x + (long)i * FT_TEST_WINDOW_VALUES, 0, g_fe_input);
  return g_fe_input;
}
#endif

static int decide(void) { return ft_decide_q(g_scores, FT_N_CLASSES, FT_Q0_FAULT_MAX); }

#if FT_LIVE
#if FT_FRONTEND_KIND == FT_FRONTEND_RAW
#if FT_LIVE_WINDOW * FT_LIVE_CHANNELS != FT_INPUT_BYTES
#error "live window and model input disagree"
#endif
#elif FT_LIVE_WINDOW * FT_LIVE_CHANNELS != FT_FRONTEND_WINDOW_VALUES
#error "live window and front end disagree"
#endif

/* ft_live.h's model step: front end + compiled model on one window of int16 frames */
static int8_t g_live_input[FT_INPUT_BYTES];
int ft_live_model(const int16_t* window, int8_t* scores) {
#if FT_FRONTEND_KIND == FT_FRONTEND_RAW
  ft_frontend_raw(window, FT_LIVE_WINDOW * FT_LIVE_CHANNELS, FT_INPUT_SCALE, FT_INPUT_ZERO_POINT, g_live_input);
#else
  ft_frontend_run(&kFtFrontend, window, 0, g_live_input);
#endif
  ft_model_invoke(g_live_input, scores);
  return 0;
}
#endif

static void command_run(void) {
  ft_counts_t counts = {0, 0, 0, 0, 0, 0};
  for (int i = 0; i < FT_N_TEST; ++i) {
    const long lat = invoke_window(test_input(i));
    const int pred = decide();
    const int label = g_fedtiny_test_y[i];
    ft_counts_add(&counts, pred, label);
    g_latency[i] = lat;
    send_line(ft_format_sample(g_out, (int)sizeof g_out, i, pred, label, lat));
  }
  long lat_min, lat_mean, lat_p50, lat_p95, lat_max;
  ft_latency_summary(g_latency, FT_N_TEST, &lat_min, &lat_mean, &lat_p50, &lat_p95, &lat_max);
  send_line(ft_format_summary(g_out, (int)sizeof g_out, counts.n, counts.correct, counts.tp,
                              counts.fp, counts.tn, counts.fn, lat_min, lat_mean, lat_p50, lat_p95,
                              lat_max));
}

static void command_infer(int payload_len) {
  if (payload_len != FT_INPUT_BYTES) {
    int pos = 0;
    put_str(g_detail, &pos, (int)sizeof g_detail, "expected ");
    put_int(g_detail, &pos, (int)sizeof g_detail, FT_INPUT_BYTES);
    put_str(g_detail, &pos, (int)sizeof g_detail, " bytes, got ");
    put_int(g_detail, &pos, (int)sizeof g_detail, payload_len);
    send_error(FT_ERR_BAD_LEN, g_detail);
    return;
  }
  const long lat = invoke_window(g_payload);
  send_line(ft_format_infer(g_out, (int)sizeof g_out, decide(), g_scores, FT_N_CLASSES, lat));
}

/* ------------------------------------------------------------------ the trainable head */

#if FT_HEAD_TRAINABLE
static void send_error_int(const char* code, const char* what, long v) {
  int pos = 0;
  put_str(g_detail, &pos, (int)sizeof g_detail, what);
  put_int(g_detail, &pos, (int)sizeof g_detail, v);
  send_error(code, g_detail);
}

static int8_t g_stage[FT_INPUT_BYTES];       /* the window being sent (hput) */
static int g_staged;                         /* its bytes received so far */
static int8_t g_hfeat[FT_HEAD_IN];

static void send_head(void) {
  send_line(ft_format_head(g_out, (int)sizeof g_out, FT_HEAD_IN, FT_HEAD_HIDDEN, FT_HEAD_CLASSES,
                           FT_HEAD_BATCH, FT_HEAD_MAX_WINDOWS, ft_head_n_held(FT_HEAD_SET_TRAIN),
                           ft_head_n_held(FT_HEAD_SET_VAL), FT_HEAD_PLAN_BYTES, FT_HEAD_METRIC_NAME,
                           ft_head_threshold()));
}

static float float_of_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void head_put(const ft_hcmd_t* c) {
  if (c->arg[0] != g_staged || g_staged + c->payload_len > FT_INPUT_BYTES) {
    send_error_int(FT_ERR_BAD_ARGS, "hput offset must be the bytes put so far: ", g_staged);
    g_staged = 0;
    return;
  }
  memcpy(g_stage + g_staged, g_payload, (size_t)c->payload_len);
  g_staged += c->payload_len;
}

static void head_add(const ft_hcmd_t* c) {
  const int complete = g_staged == FT_INPUT_BYTES;
  g_staged = 0;
  if (c->arg[0] != FT_HEAD_SET_TRAIN && c->arg[0] != FT_HEAD_SET_VAL) {
    send_error_int(FT_ERR_BAD_ARGS, "set must be 0 (train) or 1 (validation), got ", c->arg[0]);
  } else if (c->arg[1] < 0 || c->arg[1] >= FT_HEAD_CLASSES) {
    send_error_int(FT_ERR_BAD_ARGS, "label out of range: ", c->arg[1]);
  } else if (!complete) {
    send_error_int(FT_ERR_BAD_WINDOW, "incomplete window; bytes per window: ", FT_INPUT_BYTES);
  } else if ((long)ft_crc16((const char*)g_stage, FT_INPUT_BYTES) != c->arg[2]) {
    send_error(FT_ERR_BAD_WINDOW, "window CRC differs");
  } else {
    ft_model_features(g_stage, g_hfeat);
    const int i = ft_head_add(g_hfeat, (int)c->arg[1], (int)c->arg[0]);
    if (i < 0) {
      send_error_int(FT_ERR_HEAD_FULL, "windows held: ", FT_HEAD_MAX_WINDOWS);
      return;
    }
    send_line(ft_format_hwin(g_out, (int)sizeof g_out, i, (int)c->arg[0], (int)c->arg[1], g_hfeat, FT_HEAD_IN));
  }
}

static void head_train(const ft_hcmd_t* c) {
  if (c->arg[0] < 1 || c->arg[0] > 100000 || c->arg[1] < 0) {
    send_error(FT_ERR_BAD_ARGS, "epochs must be 1..100000 and the seed >= 0");
    return;
  }
  if (ft_head_begin() == 0) {
    send_error(FT_ERR_NO_WINDOWS, "no training windows held");
    return;
  }
  uint32_t rng = ft_head_seed((uint32_t)c->arg[1]);
  const float lr = float_of_bits(c->bits[2]), momentum = float_of_bits(c->bits[3]);
  for (long e = 0; e < c->arg[0]; ++e) {
    int steps = 0;
    uint32_t ticks = 0u;
    const float loss = ft_head_epoch(&rng, lr, momentum, &steps, &ticks);
    send_line(ft_format_hepoch(g_out, (int)sizeof g_out, (int)e, steps, loss, (long)ticks * (long)FT_LATENCY_PER_TICK));
  }
}

static void head_weights(const ft_hcmd_t* c) {
  if (c->arg[0] < 0 || c->arg[0] >= FT_HEAD_N_PARAMS) {
    send_error_int(FT_ERR_BAD_ARGS, "offset must be below ", FT_HEAD_N_PARAMS);
    return;
  }
  const int off = (int)c->arg[0];
  const int n = FT_HEAD_N_PARAMS - off < FT_HEAD_VALUES_PER_LINE ? FT_HEAD_N_PARAMS - off : FT_HEAD_VALUES_PER_LINE;
  send_line(ft_format_hw(g_out, (int)sizeof g_out, off, ft_head_params() + off, n));
}

/* the payload: whole IEEE-754 binary32 values, little-endian (this board's byte order) */
static void head_load(const ft_hcmd_t* c) {
  const int n = c->payload_len / 4;
  if (c->payload_len % 4 != 0 || c->arg[0] < 0 || c->arg[0] + n > FT_HEAD_N_PARAMS) {
    send_error_int(FT_ERR_BAD_ARGS, "whole floats within the parameters; parameters: ", FT_HEAD_N_PARAMS);
    return;
  }
  ft_head_load((int)c->arg[0], g_payload, n);
}

static void head_threshold(void) {
  double t, v;
  if (!ft_head_tune(&t, &v)) {
    send_error(FT_ERR_NO_WINDOWS, "no validation windows held");
    return;
  }
  ft_head_set_threshold(t);
  send_line(ft_format_hthr(g_out, (int)sizeof g_out, t, v, ft_head_n_held(FT_HEAD_SET_VAL)));
}

static void head_evaluate(const ft_hcmd_t* c) {
  ft_counts_t counts = {0, 0, 0, 0, 0, 0};
  if (c->arg[0] == FT_HEAD_SET_TRAIN || c->arg[0] == FT_HEAD_SET_VAL) {
    ft_head_evaluate((int)c->arg[0], &counts);
  } else if (c->arg[0] == FT_HEAD_SET_TEST) {
    for (int i = 0; i < FT_N_TEST; ++i) {
      ft_model_features(test_input(i), g_hfeat);
      ft_counts_add(&counts, ft_head_decide(g_hfeat), g_fedtiny_test_y[i]);
    }
  } else {
    send_error_int(FT_ERR_BAD_ARGS, "set must be 0, 1 or 2, got ", c->arg[0]);
    return;
  }
  send_line(ft_format_heval(g_out, (int)sizeof g_out, (int)c->arg[0], counts.n, counts.correct, counts.tp,
                            counts.fp, counts.tn, counts.fn));
}

static void handle_head(const ft_hcmd_t* c) {
  switch (c->type) {
    case FT_HCMD_HEAD: send_head(); break;
    case FT_HCMD_HCLEAR: ft_head_clear(); g_staged = 0; send_head(); break;
    case FT_HCMD_HINIT: ft_head_init(); send_head(); break;
    case FT_HCMD_HPUT: head_put(c); break;
    case FT_HCMD_HADD: head_add(c); break;
    case FT_HCMD_HTRAIN: head_train(c); break;
    case FT_HCMD_HWEIGHTS: head_weights(c); break;
    case FT_HCMD_HLOAD: head_load(c); break;
    case FT_HCMD_HTHR: head_threshold(); break;
    case FT_HCMD_HEVAL: head_evaluate(c); break;
    default: send_error(FT_ERR_BAD_CMD, "unknown head command"); break;
  }
}
#else
static void handle_head(const ft_hcmd_t* c) {
  (void)c;
  send_error(FT_ERR_NO_HEAD, "built without --trainable-head");
}
#endif

/* a head command answered (1), or not a head command (0) */
static int try_head(const char* line) {
  ft_hcmd_t c;
  const char* error_code = 0;
  const int r = ft_parse_head_command(line, g_payload, FT_INFER_MAX_PAYLOAD, &c, &error_code);
  if (r == 0) return 0;
  if (r < 0) send_error(error_code, "head command arguments");
  else handle_head(&c);
  send_ready();
  return 1;
}

static void handle_line(const char* line) {
  if (try_head(line)) return;
  const char* error_code = 0;
  int payload_len = 0;
  long count = 0;
  switch (ft_parse_command_arg(line, g_payload, FT_INFER_MAX_PAYLOAD, &payload_len, &error_code, &count)) {
    case FT_CMD_NONE:
      return;                                   /* an empty line gets no answer */
    case FT_CMD_INFO:
      send_banner();
      break;
    case FT_CMD_RUN:
      command_run();
      break;
    case FT_CMD_INFER:
      command_infer(payload_len);
      break;
    case FT_CMD_RESET:
      send_ready();
      ft_board_flush();
      ft_board_reset();
      return;
#if FT_LIVE
    case FT_CMD_LIVE:
      ft_live_run(&g_rx, g_out, (int)sizeof g_out);
      break;
    case FT_CMD_CAPTURE:
      ft_live_capture(&g_rx, g_out, (int)sizeof g_out, count);
      break;
#else
    case FT_CMD_LIVE:
    case FT_CMD_CAPTURE:
      (void)count;
      send_error(FT_ERR_NO_SENSOR, "built with --input windows");
      break;
#endif
    case FT_CMD_STOP:
      break;                                    /* nothing to stop: ready */
    default: {
      int pos = 0;                              /* not the whole line: it may be 4095 chars */
      int n = 0;
      while (line[n] != '\0' && n < 40 && pos < (int)sizeof g_detail - 1) g_detail[pos++] = line[n++];
      g_detail[pos] = '\0';
      send_error(error_code != 0 ? error_code : FT_ERR_BAD_CMD, g_detail);
      break;
    }
  }
  send_ready();
}

void ft_app_setup(void) {
  ft_board_init();
#if FT_HEAD_TRAINABLE
  ft_head_init();
#endif
  ft_line_reader_init(&g_rx);
  send_banner();
  send_ready();
}

void ft_app_poll(void) {
  for (;;) {
    const int c = ft_board_read();
    if (c < 0) return;
    const int r = ft_line_feed(&g_rx, (char)c);
    if (r == FT_LINE_OVERFLOW) {
      send_error(FT_ERR_TOO_LONG, "command line too long");
      send_ready();
    } else if (r == FT_LINE_READY) {
      handle_line(g_rx.buf);
    }
  }
}
