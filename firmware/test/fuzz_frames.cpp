// libFuzzer target: the device's receiver + dispatcher on arbitrary input.
//
//   clang++ -std=c++17 -fsanitize=fuzzer,address,undefined
//   -I../lib/hil_protocol/src \
//       fuzz_frames.cpp ../lib/hil_protocol/src/*.cc -o fuzz_frames &&
//       ./fuzz_frames -runs=20000
//
// Two input shapes, chosen by the first byte, so the fuzzer reaches the
// dispatcher and not only the CRC check:
//   even: the rest is a raw byte stream fed to the device as received;
//   odd:  the rest is a list of [u8 n][n bytes] records, each one a frame
//         body without its CRC (type, flags, seq, payload) that is framed
//         correctly (CRC, COBS, 0x00) before it is fed; a record with
//         n == 0xFF is instead fed raw (garbage between frames).
// Checked on every input, beyond the sanitizers: everything the device
// writes is a sequence of valid frames of device message types, and every
// request that reached the dispatcher got exactly one response.
#include <cstddef>
#include <cstdint>
#include <new>

#include "fake_backend.h"
#include "hil_dispatcher.h"
#include "hil_protocol.h"

namespace {

using hil::protocol::FrameReceiver;
using hil::protocol::Status;

// Decodes the device's output as the host would and checks it.
class CheckingSink : public hil::protocol::ByteSink {
 public:
  CheckingSink() : receiver_(rx_, sizeof(rx_)) {}
  void Write(const uint8_t* data, size_t length) override {
    for (size_t i = 0; i < length; ++i) {
      const auto ev = receiver_.Push(data[i]);
      if (ev == FrameReceiver::Event::kDropped)
        __builtin_trap();  // the device wrote a bad frame
      if (ev != FrameReceiver::Event::kFrame) continue;
      const auto& f = receiver_.frame();
      if (f.type < 0x80) __builtin_trap();  // a request type from the device
      if (hil::protocol::CheckMessage(f.type, f.payload, f.payload_length) !=
          Status::kOk)
        __builtin_trap();
      // LOG, BOOT and NAK are unsolicited; everything else answers one request
      if (f.type != hil::protocol::kLog && f.type != hil::protocol::kBoot &&
          f.type != hil::protocol::kNak) {
        ++responses;
      }
    }
  }
  uint32_t responses = 0;

 private:
  uint8_t rx_[hil::protocol::kHostMaxBody];
  FrameReceiver receiver_;
};

alignas(hil::protocol::Dispatcher)
    uint8_t g_storage[sizeof(hil::protocol::Dispatcher)];
alignas(CheckingSink) uint8_t g_sink_storage[sizeof(CheckingSink)];

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  hil::test::FakeBackend backend;
  if (data[0] & 0x80) backend.not_ready = "fuzz: not ready";
  auto* sink = new (g_sink_storage) CheckingSink();
  auto* d = new (g_storage) hil::protocol::Dispatcher(&backend, sink);
  if ((data[0] & 1) == 0) {
    d->Feed(data + 1, size - 1);
  } else {
    static uint8_t
        wire[hil::protocol::WireSize(hil::protocol::kMaxFrame + 300)];
    size_t i = 1;
    while (i < size) {
      size_t n = data[i++];
      if (n > size - i) n = size - i;
      if (data[i - 1] == 0xFF) {
        d->Feed(data + i, n);
      } else if (n >= 4) {
        size_t wn = 0;
        const uint16_t seq =
            static_cast<uint16_t>(data[i + 2] | (data[i + 3] << 8));
        if (hil::protocol::EncodeFrame(data[i], data[i + 1], seq, data + i + 4,
                                       n - 4, wire, sizeof(wire),
                                       &wn) != Status::kOk) {
          __builtin_trap();
        }
        d->Feed(wire, wn);
      }
      i += n;
    }
  }
  d->SendBoot(0x12345678u);
  d->Log(hil::protocol::kLogInfo, "fuzz", 4);
  if (sink->responses != d->counters().requests)
    __builtin_trap();  // a request without exactly one answer
  return 0;
}
