// tinyhil firmware: the protocol device running the generated model.
//
// A thin loop: bytes from the board's link go to the dispatcher, which
// answers every request through the TFLM runner and writes its responses
// (and TFLM's logs, as LOG frames) back to the link. Board specifics live in
// src/boards/<board>/ behind include/hil_board.h.
#include <cstddef>
#include <cstdint>

#include "hil_board.h"
#include "hil_dispatcher.h"
#include "hil_runner.h"

// Boards that take command-line arguments (the native host program) define
// this; elsewhere it stays null.
extern "C" void HilBoardArgs(int argc, char** argv) __attribute__((weak));

namespace {

class BoardSink : public hil::protocol::ByteSink {
 public:
  void Write(const uint8_t* data, size_t length) override {
    hil::board::Write(data, length);
  }
};

BoardSink g_sink;
hil::runner::TflmBackend g_backend;
hil::protocol::Dispatcher g_dispatcher(&g_backend, &g_sink);

void LogToLink(hil::protocol::LogLevel level, const char* text, size_t length) {
  g_dispatcher.Log(level, text, length);
}

void Setup() {
  hil::board::Init();
  hil::runner::SetLogSink(LogToLink);
  // BOOT first: a host in the middle of a run learns of the reset at once.
  const uint64_t cycles = hil::board::CyclesNow();
  g_dispatcher.SendBoot(hil::board::MicrosNow() ^
                        static_cast<uint32_t>(cycles) ^
                        static_cast<uint32_t>(cycles >> 32));
  // A model that cannot run is not fatal: every request is answered with
  // ERROR NOT_READY and the reason, so the host can say what is wrong.
  g_backend.Init();
}

void Loop() {
  uint8_t bytes[64];
  const size_t n = hil::board::Read(bytes, sizeof(bytes));
  if (n > 0) g_dispatcher.Feed(bytes, n);
}

}  // namespace

#if defined(HIL_ARDUINO)
// The Arduino core owns main().
void setup() { Setup(); }
void loop() { Loop(); }
#else
int main(int argc, char** argv) {
  if (HilBoardArgs != nullptr) HilBoardArgs(argc, argv);
  Setup();
  for (;;) Loop();
}
#endif
