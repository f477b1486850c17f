// Board glue for QEMU's mps3-an547 (Cortex-M55): the firmware that runs on
// the STM32N6's core, provable without hardware.
//
// Link: CMSDK APB UART0, which QEMU connects to its first -serial backend
// (a TCP socket for the harness). Time: SysTick on the core clock (QEMU's
// AN547 runs it at 32 MHz of virtual time), widened by its wrap interrupt.
// QEMU has no DWT cycle counter. Halt: semihosting SYS_EXIT_EXTENDED, so QEMU
// exits with the firmware's code (QEMU must run with -semihosting).
#include <cstddef>
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "hil_board.h"

namespace {

using hil::cortex_m::Reg;

// CMSDK APB UART (Arm CMSDK technical reference): DATA, STATE, CTRL, INTSTATUS,
// BAUDDIV.
constexpr uintptr_t kUart0 = 0x49303000;
constexpr uintptr_t kUartData = kUart0 + 0x00;
constexpr uintptr_t kUartState = kUart0 + 0x04;
constexpr uintptr_t kUartCtrl = kUart0 + 0x08;
constexpr uintptr_t kUartBaudDiv = kUart0 + 0x10;
constexpr uint32_t kStateTxFull = 1u << 0;
constexpr uint32_t kStateRxFull = 1u << 1;
constexpr uint32_t kCtrlTxEnable = 1u << 0;
constexpr uint32_t kCtrlRxEnable = 1u << 1;

constexpr uint32_t kTicksPerMicro = HIL_CPU_HZ / 1000000u;

constexpr uint32_t kSysTickReload = 0x00FFFFFF;  // 24 bits
volatile uint32_t g_systick_wraps = 0;

// ARM semihosting (Arm "Semihosting for AArch32 and AArch64"): BKPT 0xAB.
constexpr uint32_t kSysExitExtended = 0x20;
constexpr uint32_t kAdpStoppedApplicationExit = 0x20026;

uint32_t Semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

}  // namespace

extern "C" void SysTick_Handler() { g_systick_wraps = g_systick_wraps + 1; }

// A fault ends the run with 128 + exception number instead of a silent lock-up.
extern "C" void HilBoardFault(uint32_t ipsr) {
  hil::board::Halt(128 + static_cast<int>(ipsr & 0x1FF));
}

// newlib's exit() ends here: leave QEMU with the same code.
extern "C" void _exit(int code) {
  hil::board::Halt(code);
  for (;;) {
  }
}

namespace hil {
namespace board {

void Init() {
  Reg(kUartBaudDiv) = 16;  // the smallest legal divisor; QEMU ignores the rate
  Reg(kUartCtrl) = kCtrlTxEnable | kCtrlRxEnable;
  Reg(hil::cortex_m::kSysTickLoad) = kSysTickReload;
  Reg(hil::cortex_m::kSysTickVal) = 0;
  Reg(hil::cortex_m::kSysTickCtrl) = hil::cortex_m::kSysTickEnable |
                                     hil::cortex_m::kSysTickInterrupt |
                                     hil::cortex_m::kSysTickCoreClock;
  // VAL reads 0 until the first reload; MicrosNow() would jump back by a wrap.
  while (Reg(hil::cortex_m::kSysTickVal) == 0) {
  }
}

size_t Read(uint8_t* buffer, size_t capacity) {
  size_t n = 0;
  while (n < capacity && (Reg(kUartState) & kStateRxFull)) {
    buffer[n++] = static_cast<uint8_t>(Reg(kUartData));
  }
  return n;
}

void Write(const uint8_t* data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    while (Reg(kUartState) & kStateTxFull) {
    }
    Reg(kUartData) = data[i];
  }
}

uint32_t MicrosNow() {
  // Read the wrap count on both sides of VAL, so a wrap in between is seen.
  uint32_t wraps;
  uint32_t val;
  do {
    wraps = g_systick_wraps;
    val = Reg(hil::cortex_m::kSysTickVal);
  } while (wraps != g_systick_wraps);
  const uint64_t ticks = (uint64_t{wraps} << 24) + (kSysTickReload - val);
  return static_cast<uint32_t>(ticks / kTicksPerMicro);
}

uint64_t CyclesNow() { return 0; }
bool HasCycleCounter() { return false; }
uint32_t CpuHz() { return HIL_CPU_HZ; }
const char* BoardId() { return HIL_BOARD_ID; }

void Halt(int code) {
  const uint32_t block[2] = {kAdpStoppedApplicationExit,
                             static_cast<uint32_t>(code)};
  Semihost(kSysExitExtended, block);
  for (;;) {
  }
}

}  // namespace board
}  // namespace hil
