/* Arm CMSDK APB UART, polled: the UARTs of the MPS2 FPGA images (QEMU's mps2-an385/an386/an500)
 * and of many Cortex-M designs. Registers: DATA +0x00, STATE +0x04 (bit 0 TX buffer full, bit 1
 * RX buffer full), CTRL +0x08 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10 (clock / baud,
 * at least 16). */
#include "mt_uart.h"

#define MT_UART_REG(offset) (*(volatile uint32_t *)((uintptr_t)(MT_UART_BASE) + (offset)))

void mt_uart_init(void)
{
    MT_UART_REG(0x10) = MT_UART_DIVIDER;
    MT_UART_REG(0x08) = 0x3u;
}

uint8_t mt_uart_get(void)
{
    while (!(MT_UART_REG(0x04) & 0x2u)) {
    }
    return (uint8_t)MT_UART_REG(0x00);
}

void mt_uart_put(uint8_t byte)
{
    while (MT_UART_REG(0x04) & 0x1u) {
    }
    MT_UART_REG(0x00) = byte;
}
