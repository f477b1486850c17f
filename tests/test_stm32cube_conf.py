"""The HAL configuration header tinyhil generates for the STM32N6 firmware."""

from __future__ import annotations

from harness import stm32cube


def test_hal_conf_enables_and_includes_exactly_the_modules_compiled():
    text = stm32cube.hal_conf_header()
    for m in stm32cube.HAL_CONF_MODULES:
        assert f"#define HAL_{m.upper()}_MODULE_ENABLED" in text
        assert f'#include "stm32n6xx_hal_{m}.h"' in text
        assert f"_{m}" in stm32cube.HAL_MODULES  # what the header enables is what the builder compiles
    assert text.count("_MODULE_ENABLED") == len(stm32cube.HAL_CONF_MODULES) + 1
    assert "#define HSI_VALUE 64000000UL" in text and text.endswith("#endif  // TINYHIL_STM32N6XX_HAL_CONF_H_\n")
