// BSP configuration for the NUCLEO-N657X0-Q (the names its BSP reads):
// no BSP COM port (the firmware drives USART1 itself), no logging.
#ifndef TINYHIL_STM32N6XX_NUCLEO_CONF_H_
#define TINYHIL_STM32N6XX_NUCLEO_CONF_H_

#include "stm32n6xx_hal.h"

#define USE_NUCLEO_144
#define USE_BSP_COM_FEATURE 0U
#define USE_COM_LOG 0U
#define BSP_BUTTON_USER_IT_PRIORITY 15U

#endif  // TINYHIL_STM32N6XX_NUCLEO_CONF_H_
