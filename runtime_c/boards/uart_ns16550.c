/* 16550-compatible UART, polled: QEMU's RISC-V `virt` machine and many SoCs. Byte registers:
 * RBR/THR +0 (divisor latch low while LCR bit 7 is set, high at +1), FCR +2, LCR +3, LSR +5
 * (bit 0 data ready, bit 5 transmit holding register empty). MT_UART_DIVIDER is the divisor
 * latch: clock / (16 x baud). */
#include "mt_uart.h"

#define MT_UART_REG(offset) (*(volatile uint8_t *)((uintptr_t)(MT_UART_BASE) + (offset)))

void mt_uart_init(void)
{
    MT_UART_REG(3) = 0x80u; /* divisor latch access */
    MT_UART_REG(0) = (uint8_t)(MT_UART_DIVIDER & 0xFFu);
    MT_UART_REG(1) = (uint8_t)((MT_UART_DIVIDER >> 8) & 0xFFu);
    MT_UART_REG(3) = 0x03u; /* 8 data bits, no parity, 1 stop bit */
    /* FCR stays 0 (no FIFO): switching the FIFO on clears it, and would drop a byte the host sent
     * before this ran (QEMU holds the rest back while the receive register is full). */
}

uint8_t mt_uart_get(void)
{
    while (!(MT_UART_REG(5) & 0x01u)) {
    }
    return MT_UART_REG(0);
}

void mt_uart_put(uint8_t byte)
{
    while (!(MT_UART_REG(5) & 0x20u)) {
    }
    MT_UART_REG(0) = byte;
}
