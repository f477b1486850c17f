// HAL configuration of the tinyhil STM32N6 firmware: only the modules the
// board glue calls (harness/stm32cube.py compiles the same list). The
// names and the values ST's HAL expects are those of its
// stm32n6xx_hal_conf_template.h (UM3249, "HAL configuration file").
#ifndef TINYHIL_STM32N6XX_HAL_CONF_H_
#define TINYHIL_STM32N6XX_HAL_CONF_H_

#ifdef __cplusplus
extern "C" {
#endif

#define HAL_MODULE_ENABLED
#define HAL_CORTEX_MODULE_ENABLED
#define HAL_RCC_MODULE_ENABLED
#define HAL_PWR_MODULE_ENABLED
#define HAL_GPIO_MODULE_ENABLED
// The XSPI and UART handles name DMA types, the BSPs' button handles EXTI.
#define HAL_DMA_MODULE_ENABLED
#define HAL_EXTI_MODULE_ENABLED
#define HAL_UART_MODULE_ENABLED
#define HAL_XSPI_MODULE_ENABLED

// Oscillators (Hz). The firmware runs from HSI; the others are the
// boards' fitted parts, needed by the RCC driver's frequency reports.
#define HSE_VALUE 48000000UL
#define HSE_STARTUP_TIMEOUT 100UL
#define LSE_VALUE 32768UL
#define LSE_STARTUP_TIMEOUT 5000UL
#define MSI_VALUE 4000000UL
#define HSI_VALUE 64000000UL
#define LSI_VALUE 32000UL
#define EXTERNAL_I2S_CLOCK_VALUE 12288000UL

#define VDD_VALUE 3300UL
#define TICK_INT_PRIORITY 15U
#define USE_RTOS 0U
#define USE_SPI_CRC 0U

// No callback registration: the HAL's weak MSP hooks are enough.
#define USE_HAL_UART_REGISTER_CALLBACKS 0U
#define USE_HAL_XSPI_REGISTER_CALLBACKS 0U

// The HAL's own order (RCC, GPIO, DMA first: the others use their types).
// clang-format off
#include "stm32n6xx_hal_rcc.h"
#include "stm32n6xx_hal_gpio.h"
#include "stm32n6xx_hal_dma.h"
#include "stm32n6xx_hal_exti.h"
#include "stm32n6xx_hal_cortex.h"
#include "stm32n6xx_hal_pwr.h"
#include "stm32n6xx_hal_uart.h"
#include "stm32n6xx_hal_xspi.h"
// clang-format on

#define assert_param(expr) ((void)0U)

#ifdef __cplusplus
}
#endif

#endif  // TINYHIL_STM32N6XX_HAL_CONF_H_
