"""A local STM32CubeN6 tree: ST's HAL, CMSIS device files, board BSPs and
external-flash components, as the STM32N6 firmware compiles them.

Like `harness.tflm`, this module is the one place that knows the tree's
layout. The user gets the tree from ST (the STM32CubeN6 package or its git
repository with submodules) and points `HIL_STM32CUBE_N6_DIR` at it; nothing
of it is committed here. The hil-offline builder asks this module for the
include folders, defines and sources of one board's BSP.

Only what the firmware calls is compiled: HAL core, Cortex, RCC, PWR, GPIO,
UART and XSPI (with DMA and EXTI, whose types their handles name); the board's BSP core (SMPS, overdrive supply) and XSPI NOR
file; the NOR flash component. `hal_conf_header()` generates the HAL's
`stm32n6xx_hal_conf.h` (the builder writes it into the build folder),
enabling exactly those HAL modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

ENV_VAR = "HIL_STM32CUBE_N6_DIR"
HINT = (
    f"set {ENV_VAR} to an STM32CubeN6 tree (ST's package, or github.com/STMicroelectronics/STM32CubeN6 "
    "with its submodules), see docs/build.md"
)
HAL = "Drivers/STM32N6xx_HAL_Driver"
DEVICE = "Drivers/CMSIS/Device/ST/STM32N6xx"
CMSIS_CORE = "Drivers/CMSIS/Core/Include"
# What makes a folder an STM32CubeN6 tree.
MARKER = f"{HAL}/Inc/stm32n6xx_hal.h"
# The HAL modules the firmware uses (= the *_MODULE_ENABLED of its hal_conf);
# DMA and EXTI because the XSPI and UART handles and the BSP's button
# handles name their types.
HAL_MODULES = (
    "",
    "_cortex",
    "_rcc",
    "_rcc_ex",
    "_pwr",
    "_pwr_ex",
    "_gpio",
    "_exti",
    "_dma",
    "_dma_ex",
    "_uart",
    "_uart_ex",
    "_xspi",
)
DEFINES = ("STM32N657xx", "USE_HAL_DRIVER")
# ST's sources: secure-state build as ST's FSBL projects (-mcmse: SAU and
# the non-secure aliases that SystemInit touches), and C11's float_t (GCC
# reports FLT_EVAL_METHOD 16 for the M55, for which newlib has no float_t).
# -Os: arm-none-eabi-gcc 12.2 (Debian/Ubuntu's) crashes at -O2 on
# stm32n6xx_hal_dma_ex.c for cortex-m55; none of it is on the inference path.
CFLAGS = ("-mcmse", "-fpermitted-flt-eval-methods=c11", "-Os")


@dataclass(frozen=True)
class Bsp:
    """One board's BSP folder and its external NOR flash component."""

    folder: str  # under Drivers/BSP
    sources: tuple[str, ...]  # BSP files compiled (core: SMPS supply; XSPI NOR)
    components: tuple[str, ...]  # under Drivers/BSP/Components


BSPS = {
    "nucleo": Bsp("STM32N6xx_Nucleo", ("stm32n6xx_nucleo.c", "stm32n6xx_nucleo_xspi.c"), ("mx25um51245g",)),
    # The DK's XSPI BSP file also drives its PSRAM (aps256xx): its header is included.
    "dk": Bsp("STM32N6570-DK", ("stm32n6570_discovery.c", "stm32n6570_discovery_xspi.c"), ("mx66uw1g45g", "aps256xx")),
}

# The BSP of each STM32N6 board (= custom_hil_stm32cube of its env).
BOARD_BSP = {"nucleo_n657x0_q": "nucleo", "stm32n6570_dk": "dk"}


@dataclass(frozen=True)
class CubeTree:
    root: Path

    def bsp(self, name: str) -> Bsp:
        try:
            return BSPS[name]
        except KeyError:
            raise ConfigError(
                f"unknown STM32N6 BSP '{name}'", f"custom_hil_stm32cube is one of {', '.join(BSPS)}"
            ) from None

    def include_dirs(self, bsp: str) -> list[Path]:
        b = self.bsp(bsp)
        dirs = [self.root / HAL / "Inc", self.root / DEVICE / "Include", self.root / CMSIS_CORE]
        dirs.append(self.root / "Drivers/BSP" / b.folder)
        dirs += [self.root / "Drivers/BSP/Components" / c for c in b.components]
        return dirs

    def sources(self, bsp: str) -> list[Path]:
        """The C files compiled for the firmware, in a stable order."""
        b = self.bsp(bsp)
        files = [self.root / HAL / "Src" / f"stm32n6xx_hal{m}.c" for m in HAL_MODULES]
        # SystemCoreClock and SystemCoreClockUpdate, which the HAL's RCC uses;
        # the first-stage (FSBL) variant, as the image is what the boot ROM starts.
        files.append(self.root / DEVICE / "Source/Templates/system_stm32n6xx_fsbl.c")
        files += [self.root / "Drivers/BSP" / b.folder / s for s in b.sources]
        # aps256xx is header-only for the firmware (the PSRAM is not used).
        files += [self.root / "Drivers/BSP/Components" / c / f"{c}.c" for c in b.components[:1]]
        return files

    def missing(self, bsp: str) -> list[Path]:
        return [p for p in [*self.include_dirs(bsp), *self.sources(bsp)] if not p.exists()]


def check_tree(path: str | os.PathLike | None, bsp: str, source: str = ENV_VAR) -> CubeTree:
    """The tree at `path`, checked to hold everything board `bsp` compiles."""
    if not path:
        raise ConfigError("no STM32CubeN6 tree for the STM32N6 firmware", HINT)
    root = Path(path).expanduser().resolve()
    if not (root / MARKER).is_file():
        raise ConfigError(f"{source}={root} is not an STM32CubeN6 tree (no {MARKER})", HINT)
    tree = CubeTree(root)
    missing = tree.missing(bsp)
    if missing:
        rel = ", ".join(str(p.relative_to(root)) for p in missing[:4])
        raise ConfigError(
            f"the STM32CubeN6 tree {root} lacks {rel}",
            "check out its submodules (git submodule update --init) or use ST's full package",
        )
    return tree


# --------------------------------------------------------------------------- the HAL's configuration header

# The HAL modules the header enables and includes, in the HAL's own order
# (RCC, GPIO, DMA first: the others use their types); the same modules as
# HAL_MODULES compiles.
HAL_CONF_MODULES = ("rcc", "gpio", "dma", "exti", "cortex", "pwr", "uart", "xspi")
# The values ST's HAL expects of its configuration (names and meaning as in
# UM3249, "HAL configuration file"). The firmware runs from HSI; the other
# oscillators are the boards' fitted parts, for the RCC driver's reports.
HAL_CONF_VALUES = (
    ("HSE_VALUE", "48000000UL"),
    ("HSE_STARTUP_TIMEOUT", "100UL"),
    ("LSE_VALUE", "32768UL"),
    ("LSE_STARTUP_TIMEOUT", "5000UL"),
    ("MSI_VALUE", "4000000UL"),
    ("HSI_VALUE", "64000000UL"),
    ("LSI_VALUE", "32000UL"),
    ("EXTERNAL_I2S_CLOCK_VALUE", "12288000UL"),
    ("VDD_VALUE", "3300UL"),
    ("TICK_INT_PRIORITY", "15U"),
    ("USE_RTOS", "0U"),
    ("USE_SPI_CRC", "0U"),
    # No callback registration: the HAL's weak MSP hooks are enough.
    ("USE_HAL_UART_REGISTER_CALLBACKS", "0U"),
    ("USE_HAL_XSPI_REGISTER_CALLBACKS", "0U"),
)
HAL_CONF_NAME = "stm32n6xx_hal_conf.h"


def hal_conf_header() -> str:
    """`stm32n6xx_hal_conf.h` for the firmware, generated at build time
    (the builder writes it into the build folder): only the modules the
    board glue calls."""
    lines = [
        "// Generated by tinyhil (harness/stm32cube.py) for the STM32N6 firmware; do not edit.",
        "#ifndef TINYHIL_STM32N6XX_HAL_CONF_H_",
        "#define TINYHIL_STM32N6XX_HAL_CONF_H_",
        '#ifdef __cplusplus\nextern "C" {\n#endif',
        "#define HAL_MODULE_ENABLED",
        *(f"#define HAL_{m.upper()}_MODULE_ENABLED" for m in HAL_CONF_MODULES),
        *(f"#define {name} {value}" for name, value in HAL_CONF_VALUES),
        *(f'#include "stm32n6xx_hal_{m}.h"' for m in HAL_CONF_MODULES),
        "#define assert_param(expr) ((void)0U)",
        "#ifdef __cplusplus\n}\n#endif",
        "#endif  // TINYHIL_STM32N6XX_HAL_CONF_H_",
    ]
    return "\n".join(lines) + "\n"
