/* ft_board.h: what fedtiny_app.c needs from a board (copied by fedtiny build; do not edit).
 *
 * A board provides a byte serial port and a free-running tick counter, and can restart itself; a
 * live firmware's board also has a sampling timer.
 * qemu-m4: firmware/qemu-m4/board_qemu_m4.c (CMSDK UART0, SysTick, SCB AIRCR, CMSDK TIMER0). Arduino boards
 * (nano33ble, esp32dev with --runtime compiled): firmware/compiled/arduino_main.cpp (Serial,
 * micros(), the board's reset call).
 */
#ifndef FT_BOARD_H
#define FT_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void ft_board_init(void);                          /* serial port and timer */
int ft_board_read(void);                           /* next received byte, or -1 if none */
void ft_board_write(const char* data, int n);      /* blocks until every byte is queued */
void ft_board_flush(void);                         /* until every byte has left */
uint32_t ft_board_ticks(void);                     /* free-running modulo FT_BOARD_TICK_MASK + 1;
                                                      FT_LATENCY_PER_TICK units each */
void ft_board_reset(void);                         /* restart the firmware (does not return) */

/* Live firmware only (FT_LIVE in ft_live_config.h): a hardware timer that calls ft_stream_tick()
 * rate_hz times a second from its interrupt. start returns 0, or -1 when the timer cannot give
 * exactly that rate. */
int ft_board_sampler_start(long rate_hz);
void ft_board_sampler_stop(void);
void ft_board_idle(void);                          /* nothing to do until the next interrupt
                                                      (may return at once) */

/* the protocol application (fedtiny_app.c) */
void ft_app_setup(void);
void ft_app_poll(void);                            /* handle every byte received so far */

#ifdef __cplusplus
}
#endif

#endif /* FT_BOARD_H */
