// newlib's abort() raises a signal (its signal table is allocated) and its
// assert() prints through fiprintf (stdio allocates its buffers): either
// would link malloc into a firmware that has no heap. These take their
// place and halt the board instead (hil build checks the link).
#include <cstdlib>

#include "hil_board.h"

extern "C" void abort(void) {
  hil::board::Halt(134);  // 128 + SIGABRT, as a host shell reports it
  for (;;) {
  }
}

extern "C" void __assert_func(const char* /*file*/, int /*line*/,
                              const char* /*function*/,
                              const char* /*expression*/) {
  abort();
}
