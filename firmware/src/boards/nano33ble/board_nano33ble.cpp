// Board glue for the Arduino Nano 33 BLE (Sense), Arduino mbed core.
//
// Link: the USB CDC `Serial` (the baud rate is ignored by USB). Time:
// micros() and the DWT cycle counter of the nRF52840's Cortex-M4F at
// 64 MHz. The Arduino core owns main(): setup()/loop() are in main.cpp's
// Arduino branch, Init() only opens the port.
#include <Arduino.h>

#include "../cortex_m/cortex_m.h"
#include "hil_board.h"

namespace {
bool g_has_cycle_counter = false;
}

namespace hil {
namespace board {

void Init() {
  Serial.begin(HIL_BAUD);
  // Wait (bounded) for the host to open the port: bytes sent before are lost.
  const unsigned long start = millis();
  while (!Serial && millis() - start < 5000) {
  }
  g_has_cycle_counter = hil::cortex_m::StartCycleCounter();
}

size_t Read(uint8_t* buffer, size_t capacity) {
  size_t n = 0;
  while (n < capacity && Serial.available() > 0) {
    const int c = Serial.read();
    if (c < 0) break;
    buffer[n++] = static_cast<uint8_t>(c);
  }
  return n;
}

void Write(const uint8_t* data, size_t length) {
  while (length > 0) {
    const size_t sent = Serial.write(data, length);
    data += sent;
    length -= sent;
  }
}

uint32_t MicrosNow() { return micros(); }
uint64_t CyclesNow() { return hil::cortex_m::Cycles64(); }
bool HasCycleCounter() { return g_has_cycle_counter; }
uint32_t CpuHz() { return 64000000u; }
const char* BoardId() { return HIL_BOARD_ID; }

void Halt(int code) {
  (void)code;
  for (;;) {
    delay(1000);
  }
}

}  // namespace board
}  // namespace hil
