// BSP configuration for the STM32N6570-DK (the names its BSP reads): no
// BSP COM port (the firmware drives USART1 itself), no logging.
#ifndef TINYHIL_STM32N6570_DISCOVERY_CONF_H_
#define TINYHIL_STM32N6570_DISCOVERY_CONF_H_

#include "stm32n6xx_hal.h"

#define USE_BSP_COM_FEATURE 0U
#define USE_COM_LOG 0U
#define BSP_BUTTON_USER1_IT_PRIORITY 15U
#define BSP_BUTTON_USER2_IT_PRIORITY 15U
#define BSP_BUTTON_TAMP_IT_PRIORITY 15U

#endif  // TINYHIL_STM32N6570_DISCOVERY_CONF_H_
