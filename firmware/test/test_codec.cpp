// Host tests of the C++ protocol library (firmware/lib/hil_protocol).
//
//   test_codec selftest            unit checks that need nothing else
//   test_codec vectors FRAMES.txt  the golden vectors (tests/golden/frames.txt)
//   test_codec dispatch [--not-ready] [--max-version N]
//       a Dispatcher over the fake backend (fake_backend.h) driven by stdin:
//         feed HEX        bytes received from the host
//         boot N          send BOOT with nonce N
//         log LEVEL HEX   send LOG with that text
//       after each command it prints every frame written, one `out HEX` line
//       each (wire bytes), then `done`.
// Built by tests/test_firmware_codec.py with -fsanitize=address,undefined.
// Exit code: 0 all passed, 1 a check failed, 2 bad usage.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "fake_backend.h"
#include "hil_dispatcher.h"
#include "hil_protocol.h"

namespace {

using hil::protocol::CheckMessage;
using hil::protocol::CobsDecode;
using hil::protocol::CobsEncode;
using hil::protocol::Crc32;
using hil::protocol::DecodeFrame;
using hil::protocol::Dispatcher;
using hil::protocol::EncodeFrame;
using hil::protocol::FrameReceiver;
using hil::protocol::FrameView;
using hil::protocol::ParseBody;
using hil::protocol::Status;
using hil::protocol::StatusName;
using Bytes = std::vector<uint8_t>;

int g_failures = 0;
int g_checks = 0;

void Check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

Bytes FromHex(const std::string& hex) {
  Bytes out;
  if (hex == "-") return out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(
        std::strtoul(hex.substr(i, 2).c_str(), nullptr, 16)));
  }
  return out;
}

std::string ToHex(const uint8_t* data, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[data[i] >> 4];
    s += kDigits[data[i] & 15];
  }
  return s;
}
std::string ToHex(const Bytes& b) { return ToHex(b.data(), b.size()); }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

// Collects what the dispatcher writes.
class VectorSink : public hil::protocol::ByteSink {
 public:
  void Write(const uint8_t* data, size_t length) override {
    bytes.insert(bytes.end(), data, data + length);
  }
  // The frames written so far, each with its 0x00.
  std::vector<Bytes> TakeFrames() {
    std::vector<Bytes> frames;
    Bytes cur;
    for (uint8_t b : bytes) {
      cur.push_back(b);
      if (b == 0) {
        frames.push_back(cur);
        cur.clear();
      }
    }
    bytes.clear();
    return frames;
  }
  Bytes bytes;
};

struct Decoded {
  bool ok;
  FrameView frame;
  Bytes body;
};

Decoded DecodeWire(const Bytes& wire) {
  Decoded d{};
  d.body.resize(hil::protocol::kHostMaxBody);
  size_t n = 0;
  d.ok = DecodeFrame(wire.data(), wire.size(), d.body.data(), d.body.size(),
                     &n) == Status::kOk;
  d.body.resize(n);
  if (d.ok)
    d.ok = ParseBody(d.body.data(), d.body.size(), &d.frame) == Status::kOk;
  return d;
}

// ---------------------------------------------------------------- selftest
Bytes Pattern(size_t n, int zero_every, uint32_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1103515245u + 12345u;
    b[i] = static_cast<uint8_t>((seed >> 16) | 1);
    if (zero_every > 0 && i % static_cast<size_t>(zero_every) == 0) b[i] = 0;
  }
  return b;
}

void SelfTestCrcAndCobs() {
  const char* check = "123456789";
  Check(Crc32::Of(reinterpret_cast<const uint8_t*>(check), 9) == 0xCBF43926u,
        "CRC-32 check value");
  Check(Crc32::Of(nullptr, 0) == 0, "CRC-32 of nothing");

  const size_t lengths[] = {0,   1,   2,   253,  254,  255, 256,
                            507, 508, 509, 1000, 1024, 1100};
  const int zeros[] = {0, 1, 2, 7, 300};
  for (size_t n : lengths) {
    for (int z : zeros) {
      const Bytes in = Pattern(n, z, static_cast<uint32_t>(n * 31 + z));
      Bytes enc(n + n / 254 + 1);
      size_t en = 0;
      Check(
          CobsEncode(in.data(), n, enc.data(), enc.size(), &en) == Status::kOk,
          "COBS encode fits its bound");
      Check(std::memchr(enc.data(), 0, en) == nullptr,
            "COBS output holds no zero");
      Bytes dec(n + 1);
      size_t dn = 0;
      Check(
          CobsDecode(enc.data(), en, dec.data(), dec.size(), &dn) ==
                  Status::kOk &&
              dn == n && (n == 0 || std::memcmp(dec.data(), in.data(), n) == 0),
          "COBS round trip n=" + std::to_string(n) + " z=" + std::to_string(z));
      if (n > 0) {
        Check(CobsDecode(enc.data(), en, dec.data(), n - 1, &dn) ==
                  Status::kTooLong,
              "COBS decode limit");
        Check(CobsEncode(in.data(), n, enc.data(), en - 1, &en) ==
                  Status::kNoSpace,
              "COBS encode limit");
      }
    }
  }
  const Bytes run(254, 0x55);
  Bytes enc(300);
  size_t en = 0;
  CobsEncode(run.data(), run.size(), enc.data(), enc.size(), &en);
  Check(en == 256 && enc[0] == 0xFF && enc[255] == 0x01,
        "254 x 55 encodes as FF 55..55 01");
}

void SelfTestFrames() {
  // EncodeFrame (through FrameWriter) agrees with BuildBody + CobsEncode.
  for (size_t n : {0, 1, 245, 246, 247, 500, 1016, 5000}) {
    for (int z : {0, 3, 254}) {
      const Bytes payload = Pattern(n, z, static_cast<uint32_t>(n + 7 * z));
      Bytes body(n + 8);
      size_t bn = 0;
      Check(hil::protocol::BuildBody(0x84, 1, 0xBEEF, payload.data(), n,
                                     body.data(), body.size(),
                                     &bn) == Status::kOk &&
                bn == n + 8,
            "BuildBody");
      Bytes cobs(hil::protocol::WireSize(bn));
      size_t cn = 0;
      CobsEncode(body.data(), bn, cobs.data(), cobs.size(), &cn);
      Bytes wire(hil::protocol::WireSize(bn));
      size_t wn = 0;
      Check(EncodeFrame(0x84, 1, 0xBEEF, payload.data(), n, wire.data(),
                        wire.size(), &wn) == Status::kOk,
            "EncodeFrame n=" + std::to_string(n));
      Check(wn == cn + 1 && std::memcmp(wire.data(), cobs.data(), cn) == 0 &&
                wire[cn] == 0,
            "FrameWriter matches BuildBody+CobsEncode n=" + std::to_string(n) +
                " z=" + std::to_string(z));
      Check(EncodeFrame(0x84, 1, 0xBEEF, payload.data(), n, wire.data(), wn - 1,
                        &wn) == Status::kNoSpace,
            "EncodeFrame refuses a small buffer");
    }
  }
  // The receiver resynchronises after garbage and drops bad frames.
  uint8_t rx[64];
  FrameReceiver receiver(rx, sizeof(rx));
  Bytes wire(64);
  size_t wn = 0;
  const uint8_t ping[] = {1, 0, 2};
  EncodeFrame(0x06, 0, 7, ping, sizeof(ping), wire.data(), wire.size(), &wn);
  Bytes stream = {0x13, 0x37, 0xFE, 0x00, 0x00};
  stream.insert(stream.end(), wire.begin(),
                wire.begin() + static_cast<long>(wn));
  Bytes long_frame(200, 0x11);
  long_frame.push_back(0);
  stream.insert(stream.end(), long_frame.begin(), long_frame.end());
  stream.insert(stream.end(), wire.begin(),
                wire.begin() + static_cast<long>(wn));
  int frames = 0;
  int drops = 0;
  for (uint8_t b : stream) {
    const auto ev = receiver.Push(b);
    if (ev == FrameReceiver::Event::kFrame) {
      ++frames;
      Check(receiver.frame().seq == 7 && receiver.frame().payload_length == 3 &&
                std::memcmp(receiver.frame().payload, ping, 3) == 0,
            "receiver frame content");
    } else if (ev == FrameReceiver::Event::kDropped) {
      ++drops;
    }
  }
  Check(frames == 2 && drops == 2, "receiver: 2 frames, 2 drops");
  Check(receiver.counters().cobs == 1 && receiver.counters().too_long == 1,
        "receiver counters");
}

// Request helpers for the dispatcher self-tests.
Bytes Request(uint8_t type, uint16_t seq, const Bytes& payload) {
  Bytes wire(hil::protocol::WireSize(payload.size() + 8));
  size_t n = 0;
  EncodeFrame(type, 0, seq, payload.data(), payload.size(), wire.data(),
              wire.size(), &n);
  wire.resize(n);
  return wire;
}

Bytes WritePayload(uint8_t tensor, uint32_t offset, const Bytes& data) {
  Bytes p = {tensor, 0, 0, 0, 0, 0, 0, 0};
  hil::protocol::StoreU32(p.data() + 4, offset);
  p.insert(p.end(), data.begin(), data.end());
  return p;
}

// Feeds one request, returns the single response.
Decoded Roundtrip(Dispatcher& d, VectorSink& sink, const Bytes& wire) {
  d.Feed(wire.data(), wire.size());
  auto frames = sink.TakeFrames();
  Check(frames.size() == 1, "exactly one response");
  if (frames.size() != 1) return Decoded{};
  return DecodeWire(frames[0]);
}

uint16_t ErrorCode(const Decoded& r) {
  if (!r.ok || r.frame.type != hil::protocol::kError ||
      r.frame.payload_length < 4)
    return 0xFFFF;
  return hil::protocol::LoadU16(r.frame.payload);
}

void SelfTestDispatcher() {
  using namespace hil::protocol;
  hil::test::FakeBackend backend;
  VectorSink sink;
  static Dispatcher d(&backend, &sink);
  // INVOKE before any WRITE.
  Decoded r = Roundtrip(d, sink, Request(kInvoke, 1, {1, 0, 0, 0}));
  Check(ErrorCode(r) == kErrIncompleteInput && r.frame.seq == 1,
        "INVOKE before WRITE: INCOMPLETE_INPUT");
  // Out of order, overlapping writes still cover input 0.
  r = Roundtrip(d, sink, Request(kWrite, 2, WritePayload(0, 8, Bytes(8, 2))));
  Check(r.ok && r.frame.type == kAck && r.frame.seq == 2, "WRITE: ACK");
  Roundtrip(d, sink, Request(kWrite, 3, WritePayload(0, 0, Bytes(4, 1))));
  Roundtrip(d, sink, Request(kWrite, 4, WritePayload(1, 0, Bytes(6, 3))));
  r = Roundtrip(d, sink, Request(kInvoke, 5, {9, 0, 0, 0}));
  Check(ErrorCode(r) == kErrIncompleteInput, "gap at 4..8: INCOMPLETE_INPUT");
  Roundtrip(d, sink, Request(kWrite, 6, WritePayload(0, 2, Bytes(7, 1))));
  r = Roundtrip(d, sink, Request(kInvoke, 7, {9, 0, 0, 0}));
  Check(r.ok && r.frame.type == kResult && r.frame.payload_length == 24 &&
            LoadU32(r.frame.payload) == 9,
        "complete inputs: RESULT");
  // A duplicate INVOKE is answered from memory (same bytes, not run again).
  const Decoded again = Roundtrip(d, sink, Request(kInvoke, 7, {9, 0, 0, 0}));
  Check(again.ok && again.body == r.body, "duplicate INVOKE: the same RESULT");
  Check(d.counters().duplicates == 1, "duplicate counted");
  // Bounds.
  r = Roundtrip(d, sink, Request(kWrite, 8, WritePayload(0, 12, Bytes(5, 1))));
  Check(ErrorCode(r) == kErrOutOfRange, "WRITE past the end: OUT_OF_RANGE");
  r = Roundtrip(d, sink, Request(kWrite, 9, WritePayload(2, 0, Bytes(1, 1))));
  Check(ErrorCode(r) == kErrBadTensor, "WRITE to input 2: BAD_TENSOR");
  Bytes read = {1, 0, 0,    0,    0, 0,
                0, 0, 0xB0, 0x04, 0, 0};  // output 1, offset 0, 1200 bytes
  r = Roundtrip(d, sink, Request(kRead, 10, read));
  Check(r.ok && r.frame.type == kData && r.body.size() == kMaxFrame,
        "READ is cut to max_frame");
  StoreU32(read.data() + 4, 1199);
  r = Roundtrip(d, sink, Request(kRead, 11, read));
  Check(ErrorCode(r) == kErrOutOfRange, "READ past the end: OUT_OF_RANGE");
  // Unsolicited frames.
  d.SendBoot(0xCAFEBABE);
  auto frames = sink.TakeFrames();
  Check(frames.size() == 1 && DecodeWire(frames[0]).frame.type == kBoot,
        "BOOT frame");
  const Bytes long_text(500, 'x');
  d.Log(kLogInfo, reinterpret_cast<const char*>(long_text.data()),
        long_text.size());
  frames = sink.TakeFrames();
  Check(frames.size() == 1 &&
            DecodeWire(frames[0]).frame.payload_length == 1 + kMaxLog,
        "LOG is cut");
  // A new HELLO forgets the remembered seqs: seq 7 runs again.
  const Bytes hello = {1, 0, 1, 0, 0x78, 0x56, 0x34, 0x12};
  r = Roundtrip(d, sink, Request(kHello, 1, hello));
  Check(r.ok && r.frame.type == kInfo &&
            CheckMessage(kInfo, r.frame.payload, r.frame.payload_length) ==
                Status::kOk,
        "HELLO: INFO");
  r = Roundtrip(d, sink, Request(kInvoke, 7, {9, 0, 0, 0}));
  Check(ErrorCode(r) == kErrIncompleteInput,
        "after HELLO the old seq is a new request");
  const Bytes hello_v3 = {3, 0, 4, 0, 0, 0, 0, 0};
  r = Roundtrip(d, sink, Request(kHello, 2, hello_v3));
  Check(ErrorCode(r) == kErrVersion, "HELLO 3..4: VERSION");
  backend.not_ready = "arena too small";
  r = Roundtrip(d, sink, Request(kHello, 3, hello));
  Check(ErrorCode(r) == kErrNotReady, "not ready: NOT_READY");
  r = Roundtrip(d, sink, Request(kPing, 4, {1, 2, 3}));
  Check(r.ok && r.frame.type == kPong && r.frame.payload_length == 3,
        "not ready: PING still answered");
}

int SelfTest() {
  SelfTestCrcAndCobs();
  SelfTestFrames();
  SelfTestDispatcher();
  std::printf("selftest: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// ---------------------------------------------------------------- vectors
int Vectors(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path);
    return 2;
  }
  constexpr size_t kLimit = 1024;  // the vectors' max_frame
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto f = Split(line, ' ');
    if (f.size() < 4) {
      Check(false, "malformed vector line: " + line.substr(0, 60));
      continue;
    }
    ++count;
    const std::string& name = f[0];
    const std::string& kind = f[1];
    const Bytes wire = FromHex(f[2]);
    Bytes body(kLimit);
    size_t bn = 0;
    const Status s =
        DecodeFrame(wire.data(), wire.size(), body.data(), body.size(), &bn);
    body.resize(bn);
    // The incremental receiver sees the same thing.
    uint8_t rx[kLimit];
    FrameReceiver receiver(rx, sizeof(rx));
    std::vector<std::string> bodies;
    std::vector<std::string> drops;
    for (uint8_t b : wire) {
      const auto ev = receiver.Push(b);
      if (ev == FrameReceiver::Event::kFrame) {
        const FrameView& fr = receiver.frame();
        bodies.push_back(ToHex(fr.payload - 4, fr.payload_length + 8));
      } else if (ev == FrameReceiver::Event::kDropped) {
        drops.push_back(StatusName(receiver.last_error()));
      }
    }
    if (kind == "frame" || kind == "msgerror") {
      Check(s == Status::kOk &&
                ToHex(body) == (kind == "frame" ? f[3] : ToHex(body)),
            name + ": decodes to the body (" + StatusName(s) + ")");
      Check(bodies.size() == 1 && drops.empty() && bodies[0] == ToHex(body),
            name + ": receiver yields the body");
      FrameView fr{};
      if (s != Status::kOk ||
          ParseBody(body.data(), body.size(), &fr) != Status::kOk)
        continue;
      Bytes re(hil::protocol::WireSize(body.size()));
      size_t rn = 0;
      EncodeFrame(fr.type, fr.flags, fr.seq, fr.payload, fr.payload_length,
                  re.data(), re.size(), &rn);
      re.resize(rn);
      Check(re == wire, name + ": encodes to the wire bytes");
      const Status m = CheckMessage(fr.type, fr.payload, fr.payload_length);
      if (kind == "frame") {
        Check(m == Status::kOk,
              name + ": message valid (" + StatusName(m) + ")");
      } else {
        Check(std::string(StatusName(m)) == f[3],
              name + ": message error " + StatusName(m) + ", want " + f[3]);
        // A device answers a bad request (or an unknown type) with ERROR and
        // its seq.
        const bool device_type =
            fr.type >= 0x80 &&
            CheckMessage(fr.type, nullptr, 0) != Status::kUnknownType;
        if (!device_type) {
          hil::test::FakeBackend backend;
          VectorSink sink;
          static Dispatcher* d = nullptr;
          alignas(Dispatcher) static uint8_t storage[sizeof(Dispatcher)];
          d = new (storage) Dispatcher(&backend, &sink);
          const Decoded r = Roundtrip(*d, sink, wire);
          const uint16_t want = f[3] == "UNKNOWN_TYPE" ? 1 : 2;
          Check(ErrorCode(r) == want && r.frame.seq == fr.seq,
                name + ": device answers ERROR " + f[3]);
        }
      }
    } else if (kind == "error") {
      Check(std::string(StatusName(s)) == f[3],
            name + ": DecodeFrame says " + StatusName(s) + ", want " + f[3]);
      Check(bodies.empty() && drops.size() == 1 && drops[0] == f[3],
            name + ": receiver drops it as " +
                (drops.empty() ? std::string("nothing") : drops[0]));
    } else if (kind == "stream") {
      std::string want_drops = f.size() > 4 ? f[4] : "-";
      std::string got_bodies;
      for (size_t i = 0; i < bodies.size(); ++i)
        got_bodies += (i ? "," : "") + bodies[i];
      std::string got_drops;
      for (size_t i = 0; i < drops.size(); ++i)
        got_drops += (i ? "," : "") + drops[i];
      if (got_bodies.empty()) got_bodies = "-";
      if (got_drops.empty()) got_drops = "-";
      Check(got_bodies == f[3], name + ": stream bodies");
      Check(got_drops == want_drops,
            name + ": stream drops " + got_drops + ", want " + want_drops);
    } else {
      Check(false, name + ": unknown kind " + kind);
    }
  }
  Check(count > 0, "the vector file holds vectors");
  std::printf("vectors: %d vectors, %d checks, %d failed\n", count, g_checks,
              g_failures);
  return g_failures == 0 ? 0 : 1;
}

// ---------------------------------------------------------------- dispatch
int Dispatch(bool not_ready, int max_version) {
  hil::test::FakeBackend backend;
  if (not_ready) backend.not_ready = "arena too small for the model";
  VectorSink sink;
  static Dispatcher d(&backend, &sink);
  if (max_version > 0) d.SetMaxVersion(static_cast<uint16_t>(max_version));
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const auto f = Split(line, ' ');
    if (f[0] == "feed" && f.size() == 2) {
      const Bytes b = FromHex(f[1]);
      d.Feed(b.data(), b.size());
    } else if (f[0] == "boot" && f.size() == 2) {
      d.SendBoot(static_cast<uint32_t>(std::strtoul(f[1].c_str(), nullptr, 0)));
    } else if (f[0] == "log" && f.size() == 3) {
      const Bytes t = FromHex(f[2]);
      d.Log(static_cast<hil::protocol::LogLevel>(std::atoi(f[1].c_str())),
            reinterpret_cast<const char*>(t.data()), t.size());
    } else {
      std::fprintf(stderr, "bad command: %s\n", line.c_str());
      return 2;
    }
    for (const Bytes& frame : sink.TakeFrames())
      std::printf("out %s\n", ToHex(frame).c_str());
    std::printf("done\n");
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "selftest") return SelfTest();
  if (mode == "vectors" && argc == 3) return Vectors(argv[2]);
  if (mode == "dispatch") {
    bool not_ready = false;
    int max_version = 0;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--not-ready") not_ready = true;
      if (a == "--max-version" && i + 1 < argc)
        max_version = std::atoi(argv[++i]);
    }
    return Dispatch(not_ready, max_version);
  }
  std::fprintf(stderr,
               "usage: %s selftest | vectors FRAMES.txt | dispatch "
               "[--not-ready] [--max-version N]\n",
               argv[0]);
  return 2;
}
