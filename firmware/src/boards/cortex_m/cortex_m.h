// Cortex-M core registers shared by the bare-metal boards (ARMv7-M/ARMv8-M
// System Control Space addresses, from the Arm architecture reference).
#ifndef HIL_BOARDS_CORTEX_M_H_
#define HIL_BOARDS_CORTEX_M_H_

#include <cstdint>

namespace hil {
namespace cortex_m {

inline volatile uint32_t& Reg(uintptr_t address) {
  return *reinterpret_cast<volatile uint32_t*>(address);
}

// SysTick.
constexpr uintptr_t kSysTickCtrl = 0xE000E010;
constexpr uintptr_t kSysTickLoad = 0xE000E014;
constexpr uintptr_t kSysTickVal = 0xE000E018;
constexpr uint32_t kSysTickEnable = 1u << 0;
constexpr uint32_t kSysTickInterrupt = 1u << 1;
constexpr uint32_t kSysTickCoreClock = 1u << 2;

// Debug: DEMCR.TRCENA gates the DWT; DWT_CTRL.CYCCNTENA starts CYCCNT.
constexpr uintptr_t kDemcr = 0xE000EDFC;
constexpr uintptr_t kDwtCtrl = 0xE0001000;
constexpr uintptr_t kDwtCyccnt = 0xE0001004;
constexpr uintptr_t kDwtLar = 0xE0001FB0;  // lock access (some ARMv7-M parts)
constexpr uint32_t kDemcrTrcena = 1u << 24;
constexpr uint32_t kDwtCtrlNoCycCnt = 1u << 25;

// Starts the DWT cycle counter; false when the core has none.
inline bool StartCycleCounter() {
  Reg(kDemcr) |= kDemcrTrcena;
  if (Reg(kDwtCtrl) & kDwtCtrlNoCycCnt) return false;
  Reg(kDwtLar) = 0xC5ACCE55;
  Reg(kDwtCyccnt) = 0;
  Reg(kDwtCtrl) |= 1u;
  return (Reg(kDwtCtrl) & 1u) != 0;
}

// Widens the 32-bit CYCCNT to 64 bits; call at least once per wrap
// (about 5 s at 800 MHz) -- the firmware reads it around every inference.
inline uint64_t Cycles64() {
  static uint32_t last = 0;
  static uint64_t high = 0;
  const uint32_t now = Reg(kDwtCyccnt);
  if (now < last) high += (uint64_t{1} << 32);
  last = now;
  return high | now;
}

}  // namespace cortex_m
}  // namespace hil

#endif  // HIL_BOARDS_CORTEX_M_H_
