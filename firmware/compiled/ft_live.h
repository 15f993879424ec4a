/* ft_live.h: the live and capture commands of a sensor firmware (copied by fedtiny build; do not
 * edit). One implementation for every runtime: the compiled runtime (fedtiny_app.c) and the TFLM
 * sketch (main.cpp) both call it and supply only ft_live_model, "run the model on this input".
 *
 * "live": reads the sensor (ft_sensor.h) through the sample FIFO the board's timer fills
 * (ft_stream.h; memory: one window of frames, the model's input window, plus one hop of FIFO),
 * runs front end + model on window k = frames [k*hop, k*hop + win) as soon as its last frame
 * arrives, prints an "event" on the first decision and every change and a "beat" every
 * FT_LIVE_RATE_HZ frames; a window holding a dropped frame is skipped. The "us" figures time front
 * end + model together (ft_board_ticks), against the hop's duration (budget).
 * "capture N": the whole buffer is FIFO; frames lines, gap lines where frames were lost, capend.
 * Both end on "stop" (every other line received meanwhile is ignored); the caller sends "ready".
 * Contract: firmware/PROTOCOL.md; host twin of the decisions: fedtiny/live.py.
 */
#ifndef FT_LIVE_H
#define FT_LIVE_H

#include <stdint.h>

#include "ft_board_config.h"   /* FT_CLOCK, FT_LATENCY_PER_TICK, FT_INPUT: before the protocol header */
#include "fedtiny_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Supplied by the application: front end + model on one window of FT_LIVE_WINDOW frames
 * (FT_LIVE_WINDOW x FT_LIVE_CHANNELS int16, frame-major), the FT_N_CLASSES int8 outputs into
 * scores; 0 on success, nonzero on failure (live then ends with an "invoke" error). */
int ft_live_model(const int16_t* window, int8_t* scores);

/* The commands; rx is the application's line reader (it receives "stop"), out/out_cap its output
 * line buffer. Each returns with the sampler stopped; the caller answers "ready". */
void ft_live_run(ft_line_reader_t* rx, char* out, int out_cap);
void ft_live_capture(ft_line_reader_t* rx, char* out, int out_cap, long count);

#ifdef __cplusplus
}
#endif

#endif /* FT_LIVE_H */
