// Declarations of the few Arduino core functions tinyhil's Nano 33 BLE glue
// uses -- written for tests/test_board_glue.py, not taken from any core. The
// real header comes with PlatformIO's Arduino mbed core, which this machine
// cannot download; declaring the same signatures lets the glue and the
// Arduino branch of main.cpp be compiled for the board's Cortex-M4F.
#ifndef TINYHIL_TEST_ARDUINO_H_
#define TINYHIL_TEST_ARDUINO_H_

#include <stddef.h>
#include <stdint.h>

unsigned long millis(void);
unsigned long micros(void);
void delay(unsigned long ms);

class UsbSerialForTests {
 public:
  void begin(unsigned long baud);
  int available(void);
  int read(void);
  size_t write(const uint8_t* buffer, size_t size);
  explicit operator bool();
};
extern UsbSerialForTests Serial;

#endif  // TINYHIL_TEST_ARDUINO_H_
