/* startup.c: reset and vector table of fedtiny's qemu-m4 board (QEMU mps2-an386, Cortex-M4F).
 * Copied by fedtiny build; do not edit. The project's own minimal board support, written for
 * this project (no vendor startup code).
 *
 * Reset_Handler: copies .data from flash, zeroes .bss, paints the free stack with
 * FT_STACK_PAINT (the benchmark reads back how deep the stack ever went), enables the FPU
 * (CPACR: full access to CP10 and CP11) and calls main().
 */
#include <stdint.h>

#define FT_STACK_PAINT 0xA5A5A5A5u

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
int main(void);

#define SCB_CPACR (*(volatile uint32_t*)0xE000ED88u)

__attribute__((noreturn)) void Reset_Handler(void) {
  uint32_t* src = &_sidata;
  for (uint32_t* dst = &_sdata; dst < &_edata;) *dst++ = *src++;
  for (uint32_t* dst = &_sbss; dst < &_ebss;) *dst++ = 0u;
  uint32_t* sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t* p = &_sstack; p < sp - 16;) *p++ = FT_STACK_PAINT;
  SCB_CPACR |= (0xFu << 20);
  __asm volatile("dsb\n\tisb" ::: "memory");
  (void)main();
  for (;;) __asm volatile("wfi");
}

static void fault_handler(void) {
  for (;;) __asm volatile("nop");
}

void NMI_Handler(void) __attribute__((alias("fault_handler")));
void HardFault_Handler(void) __attribute__((alias("fault_handler")));
void Default_Handler(void) __attribute__((alias("fault_handler")));

typedef void (*ft_vector_t)(void);

void TIMER0_IRQHandler(void) __attribute__((weak, alias("fault_handler")));

/* 16 system exceptions, then the AN386's external interrupts 0..8 (8: CMSDK TIMER0, the live
 * firmware's sampling timer; the others are never enabled). */
__attribute__((section(".vectors"), used)) const ft_vector_t g_ft_vectors[16 + 9] = {
  (ft_vector_t)(uintptr_t)&_estack,  /* initial stack pointer */
  Reset_Handler,
  NMI_Handler,
  HardFault_Handler,
  Default_Handler,                   /* MemManage */
  Default_Handler,                   /* BusFault */
  Default_Handler,                   /* UsageFault */
  0, 0, 0, 0,
  Default_Handler,                   /* SVCall */
  Default_Handler,                   /* DebugMonitor */
  0,
  Default_Handler,                   /* PendSV */
  Default_Handler,                   /* SysTick (unused: ticks are read, not counted) */
  Default_Handler, Default_Handler, Default_Handler, Default_Handler,   /* IRQ 0-3 */
  Default_Handler, Default_Handler, Default_Handler, Default_Handler,   /* IRQ 4-7 */
  TIMER0_IRQHandler,                 /* IRQ 8: CMSDK TIMER0 */
};
