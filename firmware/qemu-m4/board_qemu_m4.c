/* board_qemu_m4.c: ft_board.h for QEMU's mps2-an386 machine (Cortex-M4F, 25 MHz system clock).
 * Copied by fedtiny build; do not edit.
 *
 * Serial: CMSDK APB UART0 at 0x40004000 (QEMU connects it to -serial; fedtiny flash uses
 * -serial pty). Ticks: SysTick on the processor clock, free-running over its 24 bits (reload
 * 2^24 - 1, no interrupt): ft_board_ticks() is 2^24 - 1 - CVR and differences are taken modulo
 * 2^24 (FT_BOARD_TICK_MASK), which is exact for any interval shorter than 2^24 ticks (0.67 s of
 * the 25 MHz clock, 671 million instructions). Under -icount shift=0 QEMU retires one instruction per virtual
 * nanosecond, so one 25 MHz tick is 40 instructions (FT_LATENCY_PER_TICK, clock=icount): the
 * latency is a deterministic instruction count, not a real board's time. Reset: SCB AIRCR
 * SYSRESETREQ (QEMU resets the machine and reloads the image).
 */
#include <stdint.h>

#include "ft_board.h"
#include "ft_board_config.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t*)(UART0_BASE + 0x000u))
#define UART_STATE (*(volatile uint32_t*)(UART0_BASE + 0x004u))
#define UART_CTRL (*(volatile uint32_t*)(UART0_BASE + 0x008u))
#define UART_BAUDDIV (*(volatile uint32_t*)(UART0_BASE + 0x010u))
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN 0x1u
#define UART_CTRL_RXEN 0x2u

#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define SCB_AIRCR (*(volatile uint32_t*)0xE000ED0Cu)
#define SYSTICK_RELOAD 0x00FFFFFFu

void ft_board_init(void) {
  UART_BAUDDIV = FT_BOARD_SYSCLK_HZ / FT_BOARD_BAUD;   /* >= 16, as the CMSDK UART requires */
  UART_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN;
  SYST_RVR = SYSTICK_RELOAD;
  SYST_CVR = 0u;
  SYST_CSR = 0x5u;                                     /* processor clock, enable, no interrupt */
}

int ft_board_read(void) {
  if (!(UART_STATE & UART_STATE_RXFULL)) return -1;
  return (int)(UART_DATA & 0xFFu);
}

void ft_board_write(const char* data, int n) {
  for (int i = 0; i < n; ++i) {
    while (UART_STATE & UART_STATE_TXFULL) {}
    UART_DATA = (uint8_t)data[i];
  }
}

void ft_board_flush(void) {
  while (UART_STATE & UART_STATE_TXFULL) {}
}

uint32_t ft_board_ticks(void) { return (SYSTICK_RELOAD - SYST_CVR) & SYSTICK_RELOAD; }

void ft_board_reset(void) {
  __asm volatile("dsb" ::: "memory");
  SCB_AIRCR = (0x05FAu << 16) | (SCB_AIRCR & 0x0700u) | 0x4u;   /* VECTKEY, PRIGROUP, SYSRESETREQ */
  __asm volatile("dsb" ::: "memory");
  for (;;) {}
}

int main(void) {
  ft_app_setup();
  for (;;) ft_app_poll();
}
