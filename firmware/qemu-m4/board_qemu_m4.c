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
 * SYSRESETREQ (QEMU resets the machine and reloads the image). Sampling timer (live firmware):
 * CMSDK TIMER0, below.
 */
#include <stdint.h>

#include "ft_board.h"
#include "ft_board_config.h"   /* FT_LIVE: 1 in a live firmware (fedtiny build --input sensor) */

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

#if FT_LIVE
/* Sampling timer: CMSDK APB TIMER0 at 0x40000000 on the 25 MHz system clock, interrupt 8 of the
 * AN386's NVIC. It counts RELOAD down to 0 and interrupts once per RELOAD + 1 clocks, so a rate
 * is exact only if it divides the clock (fedtiny build checks; -1 here otherwise). Under -icount
 * shift=0 the clock is virtual: one sample period is exactly 1e9 / rate instructions. */
#include "ft_stream.h"

#define TIMER0_BASE 0x40000000u
#define TIMER0_CTRL (*(volatile uint32_t*)(TIMER0_BASE + 0x000u))
#define TIMER0_VALUE (*(volatile uint32_t*)(TIMER0_BASE + 0x004u))
#define TIMER0_RELOAD (*(volatile uint32_t*)(TIMER0_BASE + 0x008u))
#define TIMER0_INTCLEAR (*(volatile uint32_t*)(TIMER0_BASE + 0x00Cu))
#define TIMER_CTRL_ENABLE 0x1u
#define TIMER_CTRL_IRQEN 0x8u
#define TIMER0_IRQ 8u
#define NVIC_ISER0 (*(volatile uint32_t*)0xE000E100u)
#define NVIC_ICER0 (*(volatile uint32_t*)0xE000E180u)
#define NVIC_ICPR0 (*(volatile uint32_t*)0xE000E280u)

void TIMER0_IRQHandler(void) {
  TIMER0_INTCLEAR = 1u;
  ft_stream_tick();
}

int ft_board_sampler_start(long rate_hz) {
  if (rate_hz <= 0 || FT_BOARD_SYSCLK_HZ % (unsigned long)rate_hz != 0u) return -1;
  TIMER0_CTRL = 0u;
  TIMER0_INTCLEAR = 1u;
  TIMER0_RELOAD = FT_BOARD_SYSCLK_HZ / (unsigned long)rate_hz - 1u;
  TIMER0_VALUE = FT_BOARD_SYSCLK_HZ / (unsigned long)rate_hz - 1u;
  NVIC_ICPR0 = 1u << TIMER0_IRQ;
  NVIC_ISER0 = 1u << TIMER0_IRQ;
  TIMER0_CTRL = TIMER_CTRL_ENABLE | TIMER_CTRL_IRQEN;
  return 0;
}

/* Sleep until the next interrupt (the sampling timer's): under -icount QEMU's virtual clock then
 * runs in step with real time instead of burning instructions in a polling loop, so a recording
 * plays at its real rate; the instruction counts of front end + model are unaffected. */
void ft_board_idle(void) { __asm volatile("wfi" ::: "memory"); }

void ft_board_sampler_stop(void) {
  TIMER0_CTRL = 0u;
  NVIC_ICER0 = 1u << TIMER0_IRQ;
  TIMER0_INTCLEAR = 1u;
  NVIC_ICPR0 = 1u << TIMER0_IRQ;
  __asm volatile("dsb\n\tisb" ::: "memory");
}
#endif

int main(void) {
  ft_app_setup();
  for (;;) ft_app_poll();
}
