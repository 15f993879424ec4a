/* ft_stream.h: the sample FIFO between the sampling timer and the main loop (copied by fedtiny
 * build; do not edit).
 *
 * The timer interrupt calls ft_stream_tick() once per sample period: it reads one frame from the
 * sensor into the FIFO, or, when the FIFO is full (the main loop is still busy with the model or
 * blocked on the serial port), reads it anyway and drops it, and counts it. Each stored frame carries the number of
 * frames dropped just before it, so the main loop knows every frame's sample counter exactly.
 * Single producer (the interrupt) and single consumer (the main loop): each 32-bit counter is
 * written by one side only, so no lock is needed on a Cortex-M (aligned 32-bit accesses are
 * atomic).
 */
#ifndef FT_STREAM_H
#define FT_STREAM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Use buf[capacity * channels] as the FIFO (the sampling timer must be stopped); channels <= 16. */
void ft_stream_reset(int16_t* buf, uint32_t* gap_before, int capacity, int channels);

/* The timer interrupt's work: one frame from ft_sensor_read into the FIFO, or one dropped frame. */
void ft_stream_tick(void);

/* The oldest stored frame (1) with the frames dropped just before it in *gap, or 0 if none. */
int ft_stream_peek(const int16_t** frame, uint32_t* gap);

/* Done with the frame ft_stream_peek returned: its slot is free again. */
void ft_stream_release(void);

/* Frames dropped after the last stored frame (not yet attached to a stored frame). */
uint32_t ft_stream_pending_gap(void);

#ifdef __cplusplus
}
#endif

#endif /* FT_STREAM_H */
