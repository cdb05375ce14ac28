/* Cortex-M startup for mcutrain firmware (newlib-nano + librdimon semihosting stdio).
 * Why it exists: the firmware must enable the FPU before any float instruction, and every way
 * out (return from main, exit(), any fault) must end QEMU with an exit code, never a hang. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void); /* librdimon: opens the :tt stdin/out/err */

/* Semihosting SYS_EXIT_EXTENDED (0x20): QEMU exits with `code` as its own status. */
__attribute__((noreturn)) void semihost_exit(int code)
{
    uint32_t blk[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
    register uint32_t r0 __asm__("r0") = 0x20;
    register uint32_t *r1 __asm__("r1") = blk;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
    }
}

/* exit() and return-from-main end here: the code reaches the host explicitly. */
__attribute__((noreturn)) void _exit(int code) { semihost_exit(code); }

/* Any fault -> exit 127, so a crashing firmware fails fast in CI instead of spinning. */
void Fault_Handler(void) { semihost_exit(127); }

/* -nostartfiles drops crti/crtn, which normally supply these for __libc_init_array. */
void _init(void) {}
void _fini(void) {}

void Reset_Handler(void)
{
    uint32_t *s = &_sidata, *d = &_sdata;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88 |= (0xFu << 20); /* CPACR: CP10/CP11 full access */
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    while (d < &_edata) *d++ = *s++;
    for (d = &_sbss; d < &_ebss;) *d++ = 0;
    __libc_init_array();
    initialise_monitor_handles();
    exit(main());
}

__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, Reset_Handler,
    Fault_Handler /* NMI */, Fault_Handler /* HardFault */, Fault_Handler /* MemManage */,
    Fault_Handler /* BusFault */, Fault_Handler /* UsageFault */, 0, 0, 0, 0,
    Fault_Handler /* SVC */, Fault_Handler /* DebugMon */, 0, Fault_Handler /* PendSV */,
    Fault_Handler /* SysTick: never enabled */,
};
