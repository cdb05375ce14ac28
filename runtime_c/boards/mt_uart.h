/* The serial line of the federated firmware harness (`mcutrain build --harness federated`).
 * One small polled driver per board family (uart_<family>.c) implements it; the target's TOML
 * names the driver and gives the base address (-DMT_UART_BASE) and clock divider
 * (-DMT_UART_DIVIDER). Blocking, one byte at a time: the messages carry their own lengths and
 * CRCs, so the driver needs no framing, interrupts or buffers. */
#ifndef MT_UART_H
#define MT_UART_H
#include <stdint.h>

void mt_uart_init(void);
uint8_t mt_uart_get(void);     /* waits for the next received byte */
void mt_uart_put(uint8_t byte); /* waits until the transmitter takes it */

#endif
