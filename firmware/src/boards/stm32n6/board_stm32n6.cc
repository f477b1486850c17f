// Board glue for the STM32N6 boards (NUCLEO-N657X0-Q, STM32N6570-DK), on
// ST's HAL and BSP from the user's STM32CubeN6 tree (HIL_STM32CUBE_N6_DIR;
// harness/stm32cube.py lists what is compiled). Secure state, as the boot
// ROM leaves it.
//
// Start-up order, as ST's own FSBL templates do it: I- and D-cache on,
// HAL_Init, supply, clock tree (below), then the peripherals.
// Clocks (RM0486 section "Reset and clock control (RCC)": PLL1 from HSI
// 64 MHz, the IC1 divider feeds the CPU, IC2/IC6/IC11 the system bus):
// - 600 MHz, NUCLEO-N657X0-Q: the SystemClock_Config of ST's
//   Projects/NUCLEO-N657X0-Q/Templates/Template and
//   Examples/XSPI/XSPI_NOR_MemoryMapped_DTR (FSBL/Src/main.c), nominal
//   supply: PLL1 = 64 / 4 * 75 = 1200 MHz, IC1 /2 (CPU), IC2 /3 (400 MHz
//   AXI), IC6 /4, IC11 /3, AHB /2.
// - 800 MHz, STM32N6570-DK: ST's Projects/STM32N6570-DK/Templates/Template
//   (FSBL/Src/main.c), which first raises the external SMPS to overdrive
//   with BSP_SMPS_Init(SMPS_VOLTAGE_OVERDRIVE) (the datasheet's 800 MHz
//   needs VDDCORE overdrive): PLL1 = 64 / 8 * 100 = 800 MHz, IC1 /1, IC2 /2,
//   IC6 /4, IC11 /2, AHB /2.
// Which one is built follows HIL_CPU_HZ, the board JSON's firmware clock,
// so the handshake's cpu_hz and the clock set here cannot disagree;
// CpuHz() reports what the RCC driver computes from the registers.
//
// Link: USART1 on PE5 (TX) / PE6 (RX), AF7, wired to the ST-LINK virtual
// COM port; HAL_UART_Init derives the baud divider from USART1's real
// kernel clock (HAL_RCCEx_GetPeriphCLKFreq). The RX FIFO is on, so a
// polling main loop does not overrun. Time: DWT CYCCNT at the CPU clock.
//
// A model linked into the external NOR flash (stm32n6_extflash.ld,
// HIL_MODEL_EXTERNAL) is read through XSPI2 in memory-mapped mode, set up
// here by the BSP (BSP_XSPI_NOR_Init, octal DTR, then
// BSP_XSPI_NOR_EnableMemoryMappedMode, as ST's XSPI_NOR_MemoryMapped_DTR
// example) before main() hands the model to TFLM.
#include <cstddef>
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "hil_board.h"

extern "C" {
#include "stm32n6xx_hal.h"
#if defined(USE_STM32N6570_DK) || __has_include("stm32n6570_discovery.h")
#include "stm32n6570_discovery.h"
#include "stm32n6570_discovery_xspi.h"
#else
#include "stm32n6xx_nucleo.h"
#include "stm32n6xx_nucleo_xspi.h"
#endif
}

namespace {

// What went wrong at start-up, left where a debugger finds it.
constexpr uint32_t kIsrErrors =
    USART_ISR_PE | USART_ISR_FE | USART_ISR_NE | USART_ISR_ORE;
constexpr uint32_t kIsrRxNotEmpty = USART_ISR_RXNE_RXFNE;
constexpr uint32_t kIsrTxNotFull = USART_ISR_TXE_TXFNF;

enum class InitFault : int { kSupply = 1, kClock, kUart, kXspi };

UART_HandleTypeDef g_uart;
bool g_has_cycle_counter = false;

[[noreturn]] void Fail(InitFault fault) {
  hil::board::Halt(static_cast<int>(fault));
  for (;;) {
  }
}

void ConfigureClocks() {
  // The external SMPS supplies VDDCORE on both boards (ST's templates).
  if (HAL_PWREx_ConfigSupply(PWR_EXTERNAL_SOURCE_SUPPLY) != HAL_OK)
    Fail(InitFault::kSupply);
#if HIL_CPU_HZ == 800000000
  BSP_SMPS_Init(SMPS_VOLTAGE_OVERDRIVE);
  constexpr uint32_t kPllM = 8, kPllN = 100, kIc1 = 1, kIc2 = 2, kIc6 = 4,
                     kIc11 = 2;
#elif HIL_CPU_HZ == 600000000
  constexpr uint32_t kPllM = 4, kPllN = 75, kIc1 = 2, kIc2 = 3, kIc6 = 4,
                     kIc11 = 3;
#else
#error \
    "STM32N6: HIL_CPU_HZ (the board's firmware_clock_hz) must be 600 or 800 MHz"
#endif
  RCC_OscInitTypeDef osc = {};
  RCC_ClkInitTypeDef clk = {};
  osc.OscillatorType = RCC_OSCILLATORTYPE_HSI;
  osc.HSIState = RCC_HSI_ON;
  osc.HSIDiv = RCC_HSI_DIV1;
  osc.HSICalibrationValue = RCC_HSICALIBRATION_DEFAULT;
  osc.PLL1.PLLState = RCC_PLL_NONE;
  osc.PLL2.PLLState = RCC_PLL_NONE;
  osc.PLL3.PLLState = RCC_PLL_NONE;
  osc.PLL4.PLLState = RCC_PLL_NONE;
  if (HAL_RCC_OscConfig(&osc) != HAL_OK) Fail(InitFault::kClock);

  // PLL1 cannot be changed while it clocks the CPU or the system bus (a
  // debugger-loaded image may find it so): run from HSI meanwhile.
  HAL_RCC_GetClockConfig(&clk);
  if (clk.CPUCLKSource == RCC_CPUCLKSOURCE_IC1 ||
      clk.SYSCLKSource == RCC_SYSCLKSOURCE_IC2_IC6_IC11) {
    clk.ClockType = RCC_CLOCKTYPE_CPUCLK | RCC_CLOCKTYPE_SYSCLK;
    clk.CPUCLKSource = RCC_CPUCLKSOURCE_HSI;
    clk.SYSCLKSource = RCC_SYSCLKSOURCE_HSI;
    if (HAL_RCC_ClockConfig(&clk) != HAL_OK) Fail(InitFault::kClock);
  }

  osc.OscillatorType = RCC_OSCILLATORTYPE_NONE;
  osc.PLL1.PLLState = RCC_PLL_ON;
  osc.PLL1.PLLSource = RCC_PLLSOURCE_HSI;
  osc.PLL1.PLLM = kPllM;
  osc.PLL1.PLLN = kPllN;
  osc.PLL1.PLLFractional = 0;
  osc.PLL1.PLLP1 = 1;
  osc.PLL1.PLLP2 = 1;
  if (HAL_RCC_OscConfig(&osc) != HAL_OK) Fail(InitFault::kClock);

  clk.ClockType = RCC_CLOCKTYPE_CPUCLK | RCC_CLOCKTYPE_HCLK |
                  RCC_CLOCKTYPE_SYSCLK | RCC_CLOCKTYPE_PCLK1 |
                  RCC_CLOCKTYPE_PCLK2 | RCC_CLOCKTYPE_PCLK5 |
                  RCC_CLOCKTYPE_PCLK4;
  clk.CPUCLKSource = RCC_CPUCLKSOURCE_IC1;
  clk.SYSCLKSource = RCC_SYSCLKSOURCE_IC2_IC6_IC11;
  clk.AHBCLKDivider = RCC_HCLK_DIV2;
  clk.APB1CLKDivider = RCC_APB1_DIV1;
  clk.APB2CLKDivider = RCC_APB2_DIV1;
  clk.APB4CLKDivider = RCC_APB4_DIV1;
  clk.APB5CLKDivider = RCC_APB5_DIV1;
  clk.IC1Selection.ClockSelection = RCC_ICCLKSOURCE_PLL1;
  clk.IC1Selection.ClockDivider = kIc1;
  clk.IC2Selection.ClockSelection = RCC_ICCLKSOURCE_PLL1;
  clk.IC2Selection.ClockDivider = kIc2;
  clk.IC6Selection.ClockSelection = RCC_ICCLKSOURCE_PLL1;
  clk.IC6Selection.ClockDivider = kIc6;
  clk.IC11Selection.ClockSelection = RCC_ICCLKSOURCE_PLL1;
  clk.IC11Selection.ClockDivider = kIc11;
  if (HAL_RCC_ClockConfig(&clk) != HAL_OK) Fail(InitFault::kClock);
}

void StartUart() {
  __HAL_RCC_GPIOE_CLK_ENABLE();
  __HAL_RCC_USART1_CLK_ENABLE();
  GPIO_InitTypeDef pins = {};
  pins.Pin = GPIO_PIN_5 | GPIO_PIN_6;
  pins.Mode = GPIO_MODE_AF_PP;
  pins.Pull = GPIO_PULLUP;  // an idle-high RX line while the VCP is closed
  pins.Speed = GPIO_SPEED_FREQ_HIGH;
  pins.Alternate = GPIO_AF7_USART1;
  HAL_GPIO_Init(GPIOE, &pins);

  g_uart.Instance = USART1;
  g_uart.Init.BaudRate = HIL_BAUD;
  g_uart.Init.WordLength = UART_WORDLENGTH_8B;
  g_uart.Init.StopBits = UART_STOPBITS_1;
  g_uart.Init.Parity = UART_PARITY_NONE;
  g_uart.Init.Mode = UART_MODE_TX_RX;
  g_uart.Init.HwFlowCtl = UART_HWCONTROL_NONE;
  g_uart.Init.OverSampling = UART_OVERSAMPLING_16;
  g_uart.Init.OneBitSampling = UART_ONE_BIT_SAMPLE_DISABLE;
  g_uart.Init.ClockPrescaler = UART_PRESCALER_DIV1;
  if (HAL_UART_Init(&g_uart) != HAL_OK) Fail(InitFault::kUart);
  if (HAL_UARTEx_EnableFifoMode(&g_uart) != HAL_OK) Fail(InitFault::kUart);
}

#ifdef HIL_MODEL_EXTERNAL
void MapExternalFlash() {
  BSP_XSPI_NOR_Init_t init = {};
  init.InterfaceMode = BSP_XSPI_NOR_OPI_MODE;
  init.TransferRate = BSP_XSPI_NOR_DTR_TRANSFER;
  if (BSP_XSPI_NOR_Init(0, &init) != BSP_ERROR_NONE) Fail(InitFault::kXspi);
  if (BSP_XSPI_NOR_EnableMemoryMappedMode(0) != BSP_ERROR_NONE)
    Fail(InitFault::kXspi);
}
#endif

}  // namespace

// ST's CMSIS device start-up (VTOR, SAU, FPU access, XSPI2 reset), before
// .init_array and main().
extern "C" void HilBoardEarlyInit() { SystemInit(); }

// The HAL's 1 ms time base (its timeouts) runs on SysTick.
extern "C" void SysTick_Handler() { HAL_IncTick(); }

// A fault leaves the core spinning here, where a debugger finds it.
extern "C" void HilBoardFault(uint32_t ipsr) {
  volatile uint32_t exception = ipsr;
  (void)exception;
  for (;;) {
  }
}

extern "C" void _exit(int code) {
  hil::board::Halt(code);
  for (;;) {
  }
}

namespace hil {
namespace board {

void Init() {
  SCB_EnableICache();
  SCB_EnableDCache();
  if (HAL_Init() != HAL_OK) Fail(InitFault::kClock);
  ConfigureClocks();
  StartUart();
#ifdef HIL_MODEL_EXTERNAL
  MapExternalFlash();
#endif
  g_has_cycle_counter = hil::cortex_m::StartCycleCounter();
}

size_t Read(uint8_t* buffer, size_t capacity) {
  size_t n = 0;
  for (;;) {
    const uint32_t isr = g_uart.Instance->ISR;
    if (isr & kIsrErrors)
      g_uart.Instance->ICR = kIsrErrors;  // the protocol's CRC catches the loss
    if (n >= capacity || !(isr & kIsrRxNotEmpty)) break;
    buffer[n++] = static_cast<uint8_t>(g_uart.Instance->RDR);
  }
  return n;
}

void Write(const uint8_t* data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    while (!(g_uart.Instance->ISR & kIsrTxNotFull)) {
    }
    g_uart.Instance->TDR = data[i];
  }
}

uint32_t MicrosNow() {
  return static_cast<uint32_t>(hil::cortex_m::Cycles64() /
                               (SystemCoreClock / 1000000u));
}

uint64_t CyclesNow() { return hil::cortex_m::Cycles64(); }
bool HasCycleCounter() { return g_has_cycle_counter; }
uint32_t CpuHz() { return HAL_RCC_GetCpuClockFreq(); }

const char* BoardId() { return HIL_BOARD_ID; }

void Halt(int code) {
  (void)code;
  for (;;) {
    __asm__ volatile("wfi");
  }
}

}  // namespace board
}  // namespace hil
