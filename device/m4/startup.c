/* Cortex-M4F start-up for QEMU's mps2-an386: the vector table, the FPU
 * switched on, then newlib's _start (semihosting: stdio, files and the
 * command line come from the host). */
#include <stdint.h>

extern void _start(void);
extern char __stack[];
void reset_handler(void);

static void hang(void) {
  for (;;) {
  }
}

typedef void (*handler)(void);

__attribute__((section(".vectors"), used)) const handler vectors[16] = {
    (handler)(uintptr_t)__stack, reset_handler, hang, hang, hang, hang, hang};

void reset_handler(void) {
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10 and CP11 (the FPU) on */
  __asm volatile("dsb\n\tisb");
  _start();
}
