/* fedtiny_app.c: the fedtiny serial protocol v3 around the compiled model (copied by fedtiny
 * build; do not edit). The same conversation as the TFLM sketch (codegen/templates/main.cpp.j2)
 * from the same protocol header: at boot "banner" then "ready"; "info", "run", "infer <hex>",
 * "reset"; every failure an "error" line, then "ready" (firmware/PROTOCOL.md).
 *
 * With a front end (ft_frontend_config.h: FT_FRONTEND_KIND other than FT_FRONTEND_RAW) the
 * embedded test windows are int16 samples and "run" computes each model input with
 * ft_frontend_run (the host twin: fedtiny/frontend.py); "infer" still takes the model input.
 *
 * Latency: ticks of ft_board_ticks() around ft_model_invoke(), times FT_LATENCY_PER_TICK, in the
 * unit the banner's clock names (clock=device: microseconds; clock=icount: instructions counted
 * by QEMU -icount shift=0, ft_board_config.h).
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

static void handle_line(const char* line) {
  const char* error_code = 0;
  int payload_len = 0;
  switch (ft_parse_command_ex(line, g_payload, FT_INFER_MAX_PAYLOAD, &payload_len, &error_code)) {
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
    case FT_CMD_LIVE:
    case FT_CMD_CAPTURE:
      send_error(FT_ERR_NO_SENSOR, "built with --input windows");
      break;
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
