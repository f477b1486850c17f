// Board glue for the STM32N6 boards (NUCLEO-N657X0-Q, STM32N6570-DK):
// bare metal, register level, secure state (as the boot ROM leaves it).
//
// Link: USART1 on PE5 (TX) / PE6 (RX), alternate function 7, wired to the
// ST-LINK virtual COM port; 921600 8N1 with the RX FIFO on, so a polling
// main loop does not overrun. Clock: the firmware keeps the reset clock
// tree (HSI 64 MHz for CPU and buses, USART1 kernel clock = PCLK2) -- no PLL
// set-up, so CPU figures are at 64 MHz, not 800. Time: DWT CYCCNT.
// Register addresses and bits: STM32N6 reference manual (RM0486), secure
// aliases of the peripherals.
#include <cstddef>
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "hil_board.h"

namespace {

using hil::cortex_m::Reg;

#ifndef HIL_PCLK2_HZ
#define HIL_PCLK2_HZ \
  64000000u  // reset clock tree: HSI 64 MHz, APB2 prescaler 1
#endif

constexpr uintptr_t kRcc = 0x56028000;
constexpr uintptr_t kRccBusEnSet = kRcc + 0xA44;
constexpr uintptr_t kRccAhb4EnSet = kRcc + 0xA5C;
constexpr uintptr_t kRccApb2EnSet = kRcc + 0xA6C;
constexpr uint32_t kBusAhb4 = 1u << 6;
constexpr uint32_t kBusApb2 = 1u << 9;
constexpr uint32_t kAhb4GpioE = 1u << 4;
constexpr uint32_t kApb2Usart1 = 1u << 4;

constexpr uintptr_t kGpioE = 0x56021000;
constexpr uintptr_t kGpioModer = kGpioE + 0x00;
constexpr uintptr_t kGpioOspeedr = kGpioE + 0x08;
constexpr uintptr_t kGpioPupdr = kGpioE + 0x0C;
constexpr uintptr_t kGpioAfrl = kGpioE + 0x20;
constexpr int kTxPin = 5;
constexpr int kRxPin = 6;
constexpr uint32_t kAfUsart1 = 7;

constexpr uintptr_t kUsart1 = 0x52001000;
constexpr uintptr_t kUsartCr1 = kUsart1 + 0x00;
constexpr uintptr_t kUsartBrr = kUsart1 + 0x0C;
constexpr uintptr_t kUsartIsr = kUsart1 + 0x1C;
constexpr uintptr_t kUsartIcr = kUsart1 + 0x20;
constexpr uintptr_t kUsartRdr = kUsart1 + 0x24;
constexpr uintptr_t kUsartTdr = kUsart1 + 0x28;
constexpr uint32_t kCr1Ue = 1u << 0;
constexpr uint32_t kCr1Re = 1u << 2;
constexpr uint32_t kCr1Te = 1u << 3;
constexpr uint32_t kCr1FifoEn = 1u << 29;
constexpr uint32_t kIsrErrors = 0xFu;  // PE, FE, NE, ORE
constexpr uint32_t kIsrRxNotEmpty = 1u << 5;
constexpr uint32_t kIsrTxNotFull = 1u << 7;

bool g_has_cycle_counter = false;

void SetField(uintptr_t reg, int shift, uint32_t width_mask, uint32_t value) {
  Reg(reg) = (Reg(reg) & ~(width_mask << shift)) | (value << shift);
}

}  // namespace

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
  Reg(kRccBusEnSet) = kBusAhb4 | kBusApb2;
  Reg(kRccAhb4EnSet) = kAhb4GpioE;
  Reg(kRccApb2EnSet) = kApb2Usart1;
  const uint32_t readback =
      Reg(kRccApb2EnSet);  // the clock is on before the first access
  (void)readback;

  const int pins[] = {kTxPin, kRxPin};
  for (int pin : pins) {
    SetField(kGpioModer, 2 * pin, 0x3, 0x2);    // alternate function
    SetField(kGpioOspeedr, 2 * pin, 0x3, 0x2);  // high speed
    SetField(kGpioPupdr, 2 * pin, 0x3,
             pin == kRxPin ? 0x1 : 0x0);  // RX pulled up
    SetField(kGpioAfrl, 4 * pin, 0xF, kAfUsart1);
  }

  Reg(kUsartCr1) = 0;
  Reg(kUsartBrr) =
      (HIL_PCLK2_HZ + HIL_BAUD / 2) / HIL_BAUD;  // oversampling by 16
  Reg(kUsartCr1) = kCr1FifoEn | kCr1Te | kCr1Re | kCr1Ue;

  g_has_cycle_counter = hil::cortex_m::StartCycleCounter();
}

size_t Read(uint8_t* buffer, size_t capacity) {
  size_t n = 0;
  for (;;) {
    const uint32_t isr = Reg(kUsartIsr);
    if (isr & kIsrErrors)
      Reg(kUsartIcr) = kIsrErrors;  // the protocol's CRC catches the loss
    if (n >= capacity || !(isr & kIsrRxNotEmpty)) break;
    buffer[n++] = static_cast<uint8_t>(Reg(kUsartRdr));
  }
  return n;
}

void Write(const uint8_t* data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    while (!(Reg(kUsartIsr) & kIsrTxNotFull)) {
    }
    Reg(kUsartTdr) = data[i];
  }
}

uint32_t MicrosNow() {
  return static_cast<uint32_t>(hil::cortex_m::Cycles64() /
                               (HIL_CPU_HZ / 1000000u));
}

uint64_t CyclesNow() { return hil::cortex_m::Cycles64(); }
bool HasCycleCounter() { return g_has_cycle_counter; }
uint32_t CpuHz() { return HIL_CPU_HZ; }

const char* BoardId() { return HIL_BOARD_ID; }

void Halt(int code) {
  (void)code;
  for (;;) {
    __asm__ volatile("wfi");
  }
}

}  // namespace board
}  // namespace hil
