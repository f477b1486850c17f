// The seam between the portable firmware (protocol, runner, main loop) and a
// board. Each board implements these few functions in src/boards/<board>/;
// nothing else in the firmware touches hardware.
#ifndef HIL_BOARD_H_
#define HIL_BOARD_H_

#include <cstddef>
#include <cstdint>

// A board's facts come from boards/<id>.json, the one description of a
// board: scripts/hil_model.py adds them to every PlatformIO build
// (harness.boards.firmware_defines).
#if !defined(HIL_BOARD_ID) || !defined(HIL_CPU_HZ) || !defined(HIL_BAUD)
#error \
    "HIL_BOARD_ID, HIL_CPU_HZ, HIL_BAUD come from boards/<id>.json: build with pio run or hil build"
#endif

namespace hil {
namespace board {

// Clocks, FPU/MVE enable (CPACR), the serial link, the cycle counter.
void Init();

// Non-blocking: copies up to `capacity` received bytes into `buffer` and
// returns how many (0 when none are waiting).
size_t Read(uint8_t* buffer, size_t capacity);

// Blocks until `length` bytes are queued for sending on the link.
void Write(const uint8_t* data, size_t length);

// Free-running microsecond clock (wraps).
uint32_t MicrosNow();

// CPU cycle counter (DWT CYCCNT widened to 64 bits); HasCycleCounter() says
// whether the value means anything on this board.
uint64_t CyclesNow();
bool HasCycleCounter();

// Core clock in Hz, 0 when unknown.
uint32_t CpuHz();

// Board id as in boards/<id>.json.
const char* BoardId();

// Called when the firmware cannot continue (e.g. arena too small): boards
// that can exit (QEMU semihosting, native) do so, others stay in a loop.
void Halt(int code);

}  // namespace board
}  // namespace hil

#endif  // HIL_BOARD_H_
