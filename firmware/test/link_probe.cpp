// A minimal Cortex-M program around the protocol library, linked by
// harness/protocol/footprint.py only to prove the link needs no heap or
// exception support and to measure the Dispatcher's static RAM.
#include "fake_backend.h"
#include "hil_dispatcher.h"

namespace {

class NullSink : public hil::protocol::ByteSink {
 public:
  void Write(const uint8_t* data, size_t length) override {
    for (size_t i = 0; i < length; ++i)
      last = static_cast<uint8_t>(last ^ data[i]);
  }
  volatile uint8_t last = 0;
};

hil::test::FakeBackend g_backend;
NullSink g_sink;
hil::protocol::Dispatcher g_dispatcher(&g_backend, &g_sink);

}  // namespace

volatile uint8_t g_link_input[64];

int main() {
  g_dispatcher.SendBoot(1);
  for (;;) {
    uint8_t bytes[64];
    for (int i = 0; i < 64; ++i) bytes[i] = g_link_input[i];
    g_dispatcher.Feed(bytes, sizeof(bytes));
    g_dispatcher.Log(hil::protocol::kLogInfo, "probe", 5);
  }
}
