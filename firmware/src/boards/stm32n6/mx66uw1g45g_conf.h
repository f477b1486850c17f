// MX66UW1G45G component configuration (STM32N6570-DK): output driver
// strength and dummy cycles, the values of ST's component template for
// this part at the XSPI clock its BSP sets.
#ifndef TINYHIL_MX66UW1G45G_CONF_H_
#define TINYHIL_MX66UW1G45G_CONF_H_

#include "stm32n6xx_hal.h"

#define CONF_OSPI_ODS MX66UW1G45G_CR_ODS_24
#define DUMMY_CYCLES_READ 8U
#define DUMMY_CYCLES_READ_OCTAL 6U
#define DUMMY_CYCLES_READ_OCTAL_DTR 6U
#define DUMMY_CYCLES_REG_OCTAL 4U
#define DUMMY_CYCLES_REG_OCTAL_DTR 5U

#endif  // TINYHIL_MX66UW1G45G_CONF_H_
