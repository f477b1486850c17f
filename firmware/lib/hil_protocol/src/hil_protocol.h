// tinyhil wire protocol, versions 1 and 2 (docs/protocol.md): the codec.
//
// COBS framing, CRC-32, frame encode/decode, an incremental receiver and a
// streaming frame writer. Plain C++17: no heap, no exceptions, no RTTI, no
// Arduino or HAL includes. Buffers belong to the caller; every function
// reports a Status. The command dispatcher (device side) is hil_dispatcher.h.
#ifndef HIL_PROTOCOL_H_
#define HIL_PROTOCOL_H_

#include <cstddef>
#include <cstdint>

// Largest frame body the device accepts (INFO.max_frame), bytes.
#ifndef HIL_MAX_FRAME
#define HIL_MAX_FRAME 1024
#endif
// Requests the host may keep outstanding (INFO.rx_window).
#ifndef HIL_RX_WINDOW
#define HIL_RX_WINDOW 4
#endif
// Bytes the frame writer collects before it calls the sink (>= 256).
#ifndef HIL_TX_STAGE
#define HIL_TX_STAGE 512
#endif

namespace hil {
namespace protocol {

// The versions this library speaks (a device answers the highest within
// the host's range; -DHIL_PROTOCOL_MAX_VERSION=1 builds a version-1 device).
#ifndef HIL_PROTOCOL_MAX_VERSION
#define HIL_PROTOCOL_MAX_VERSION 2
#endif
constexpr uint16_t kProtocolVersionMin = 1;
constexpr uint16_t kProtocolVersion = HIL_PROTOCOL_MAX_VERSION;
static_assert(kProtocolVersion >= 1 && kProtocolVersion <= 2,
              "HIL_PROTOCOL_MAX_VERSION must be 1 or 2");
constexpr size_t kMaxFrame = HIL_MAX_FRAME;
constexpr uint16_t kRxWindow = HIL_RX_WINDOW;
constexpr size_t kTxStage = HIL_TX_STAGE;
constexpr size_t kHeaderSize = 4;  // type, flags, seq
constexpr size_t kCrcSize = 4;
constexpr size_t kMinBody = kHeaderSize + kCrcSize;
// The host accepts bodies up to this size (docs/protocol.md section 1).
constexpr size_t kHostMaxBody = 65535 + kMinBody;

static_assert(kMaxFrame >= 64 && kMaxFrame <= kHostMaxBody,
              "HIL_MAX_FRAME out of range");
static_assert(kRxWindow >= 1 && kRxWindow <= 64, "HIL_RX_WINDOW out of range");
static_assert(kTxStage >= 256, "HIL_TX_STAGE must hold a whole COBS block");

// Wire bytes of a body of n bytes: COBS overhead plus the 0x00 delimiter.
constexpr size_t WireSize(size_t body) { return body + body / 254 + 2; }

// WRITE and DATA: u8 tensor, u8 0, u16 0, u32 offset, then tensor bytes.
constexpr size_t kChunkHeaderSize = 8;
// Tensor bytes one WRITE or DATA carries in a body of max_frame bytes
// (harness.protocol.codec.max_chunk).
constexpr size_t MaxChunk(size_t max_frame) {
  return max_frame - kMinBody - kChunkHeaderSize;
}

// Message types (section 3).
enum MessageType : uint8_t {
  kHello = 0x01,
  kWrite = 0x02,
  kInvoke = 0x03,
  kRead = 0x04,
  kPing = 0x06,
  kTraceRead = 0x07,    // FEATURE_TRACE
  kCaptureRead = 0x08,  // FEATURE_TRACE
  kAck = 0x80,
  kInfo = 0x81,
  kResult = 0x83,
  kData = 0x84,
  kPong = 0x86,
  kNak = 0x87,      // version 2, unsolicited
  kTrace = 0x88,    // FEATURE_TRACE
  kCapture = 0x89,  // FEATURE_TRACE
  kError = 0xE0,
  kLog = 0xF0,
  kBoot = 0xF1,
};

constexpr uint8_t kFlagRetry = 0x01;

// INFO.flags.
constexpr uint16_t kInfoCyclesReal = 0x0001;
constexpr uint16_t kInfoHostTime = 0x0002;

// INFO (version 2) features.
constexpr uint32_t kFeatureStagedOutputs = 0x0001;
constexpr uint32_t kFeatureNak = 0x0002;
constexpr uint32_t kFeatureTrace = 0x0004;  // TRACE_READ, CAPTURE_READ

// INVOKE (version 2) options byte, with FEATURE_TRACE.
constexpr uint8_t kInvokeTrace = 0x01;
constexpr uint8_t kInvokeCapture = 0x02;
constexpr size_t kTraceHeaderSize = 8;  // u32 sample_id, u16 n_ops, first_op
constexpr size_t kTraceRecordSize = 8;  // u32 crc, u32 ticks
constexpr size_t kCaptureHeaderSize = 16;
constexpr size_t kInfoTraceSize =
    12;  // u16 n_ops, u16 0, u32 capture, u32 tick_hz

// NAK reasons.
constexpr uint16_t kNakGap = 1;
constexpr uint16_t kNakBadFrame = 2;

// Payload sizes of the two forms of INVOKE and READ.
constexpr size_t kInvokeV1Size = 4;
constexpr size_t kInvokeV2Size = 12;  // + u32 input_crc, u8 slot, u8 0, u16 0
constexpr size_t kReadV1Size = 12;
constexpr size_t kReadV2Size = 16;  // + u32 sample_id

// ERROR codes (section 4).
enum ErrorCode : uint16_t {
  kErrUnknownType = 1,
  kErrBadLength = 2,
  kErrBadTensor = 3,
  kErrOutOfRange = 4,
  kErrIncompleteInput = 5,
  kErrInvokeFailed = 6,
  kErrVersion = 7,
  kErrNotReady = 8,
  kErrInputMismatch = 9,  // version 2: the inputs' CRC is not the INVOKE's
  kErrStale = 10,         // version 2: the outputs of that sample are not held
};

// Tensor dtypes in INFO's descriptors (section 3.1; the Python codec's
// DTYPE_CODES). Stable: a code is never reused.
enum Dtype : uint8_t {
  kDtypeFloat32 = 1,
  kDtypeInt8 = 2,
  kDtypeUint8 = 3,
  kDtypeInt16 = 4,
  kDtypeInt32 = 5,
  kDtypeFloat16 = 6,
  kDtypeInt64 = 7,
  kDtypeBool = 8,
};

enum LogLevel : uint8_t {
  kLogError = 0,
  kLogWarn = 1,
  kLogInfo = 2,
  kLogDebug = 3
};

// Result of every codec call. The first four are the spec's named codec
// errors (what a receiver drops a frame for).
enum class Status : uint8_t {
  kOk = 0,
  kCobs,     // invalid COBS
  kShort,    // body shorter than 8 bytes
  kCrc,      // CRC mismatch
  kTooLong,  // longer than the receiver's buffer
  kNoSpace,  // the caller's output buffer is too small
  kBadArgument,
  kBusy,         // a frame is being written already
  kUnknownType,  // message level: a type the protocol does not define
  kBadLength,    // message level: a payload that does not fit its type
};

// "OK", "COBS", "SHORT", "CRC", "TOO_LONG", "UNKNOWN_TYPE", "BAD_LENGTH", ...
// (the golden vectors' names).
const char* StatusName(Status status);

// ---------------------------------------------------------------- CRC-32
// IEEE 802.3 (zlib.crc32): reflected, poly 0xEDB88320, init/xorout ~0.
class Crc32 {
 public:
  void Update(const uint8_t* data, size_t length);
  void Update(uint8_t byte) { Update(&byte, 1); }
  uint32_t Value() const { return ~state_; }
  void Reset() { state_ = 0xFFFFFFFFu; }
  static uint32_t Of(const uint8_t* data, size_t length);

 private:
  uint32_t state_ = 0xFFFFFFFFu;
};

// ---------------------------------------------------------------- COBS
// Encodes `length` bytes (no delimiter added), exactly as Cheshire & Baker's
// StuffData: a run of 254 non-zero bytes ends its block (FF) and a new block
// starts even at the end, so 254 x 55 is FF 55..55 01. Needs at most
// length + length/254 + 1 bytes.
Status CobsEncode(const uint8_t* in, size_t length, uint8_t* out,
                  size_t capacity, size_t* out_length);
// Decodes one frame's COBS bytes (without the 0x00 delimiter).
Status CobsDecode(const uint8_t* in, size_t length, uint8_t* out,
                  size_t capacity, size_t* out_length);

// ---------------------------------------------------------------- frames
struct FrameView {
  uint8_t type;
  uint8_t flags;
  uint16_t seq;
  const uint8_t* payload;
  size_t payload_length;
};

// Checks a decoded body (length, CRC) and splits it.
Status ParseBody(const uint8_t* body, size_t length, FrameView* frame);
// Builds the body (header, payload, CRC) into `body`.
Status BuildBody(uint8_t type, uint8_t flags, uint16_t seq,
                 const uint8_t* payload, size_t payload_length, uint8_t* body,
                 size_t capacity, size_t* body_length);
// Body -> wire: COBS(body) 0x00.
Status EncodeFrame(uint8_t type, uint8_t flags, uint16_t seq,
                   const uint8_t* payload, size_t payload_length, uint8_t* wire,
                   size_t capacity, size_t* wire_length);
// Message level: kUnknownType for a type the protocol does not define,
// kBadLength for a payload that does not fit its type (docs/protocol.md 3).
Status CheckMessage(uint8_t type, const uint8_t* payload, size_t length);
// Wire -> body, checked exactly as the receiver checks it. `wire` may end
// with its 0x00 delimiter or not; it must hold no other 0x00. A body longer
// than `capacity` is kTooLong.
Status DecodeFrame(const uint8_t* wire, size_t length, uint8_t* body,
                   size_t capacity, size_t* body_length);

// ---------------------------------------------------------------- receiver
// Byte-at-a-time COBS decoding into a caller-owned buffer. A frame that is
// invalid is dropped and counted; the next 0x00 resynchronises.
class FrameReceiver {
 public:
  enum class Event : uint8_t { kNone, kFrame, kDropped };

  FrameReceiver(uint8_t* buffer, size_t capacity)
      : buffer_(buffer), capacity_(capacity) {}

  // kFrame: frame() holds a CRC-checked frame until the next Push.
  // kDropped: last_error() says why.
  Event Push(uint8_t byte);
  const FrameView& frame() const { return frame_; }
  Status last_error() const { return last_error_; }
  void Reset();

  struct Counters {
    uint32_t frames;
    uint32_t cobs;
    uint32_t short_body;
    uint32_t crc;
    uint32_t too_long;
  };
  const Counters& counters() const { return counters_; }

 private:
  Event Drop(Status why);

  uint8_t* buffer_;
  size_t capacity_;
  size_t length_ = 0;
  size_t wire_bytes_ = 0;  // since the last delimiter
  uint8_t code_ = 0;
  uint8_t remaining_ = 0;  // data bytes left in the current COBS block
  Status error_ = Status::kOk;
  Status last_error_ = Status::kOk;
  FrameView frame_{};
  Counters counters_{};
};

// ---------------------------------------------------------------- writer
// Where encoded frames go (a board's serial port, a test buffer).
class ByteSink {
 public:
  virtual void Write(const uint8_t* data, size_t length) = 0;

 protected:
  ~ByteSink() = default;
};

// Streams one frame at a time to a sink: header, payload pieces and CRC are
// COBS-encoded on the fly through a small staging buffer, so no body buffer
// is needed for a response (a DATA payload is read straight from its tensor).
class FrameWriter {
 public:
  explicit FrameWriter(ByteSink* sink) : sink_(sink) {}

  Status Begin(uint8_t type, uint8_t flags, uint16_t seq);
  void Put(const uint8_t* data, size_t length);
  void PutU8(uint8_t v) { Put(&v, 1); }
  void PutU16(uint16_t v);
  void PutU32(uint32_t v);
  void PutU64(uint64_t v);
  void PutI32(int32_t v) { PutU32(static_cast<uint32_t>(v)); }
  void PutF32(float v);
  // Appends the CRC and the delimiter, and hands everything to the sink.
  Status End();
  bool open() const { return open_; }
  // Payload bytes written since Begin (header and CRC not counted).
  size_t payload_length() const { return payload_length_; }

  // Optional: the first `capacity` payload bytes are also copied here (the
  // dispatcher's memory of recent responses).
  void Capture(uint8_t* buffer, size_t capacity) {
    capture_ = buffer;
    capture_capacity_ = capacity;
  }

 private:
  void PutRaw(const uint8_t* data, size_t length);
  void FinishBlock();
  void Flush();

  ByteSink* sink_;
  uint8_t stage_[kTxStage];
  size_t used_ = 0;      // finished bytes in stage_
  size_t code_pos_ = 0;  // where the current block's code byte goes
  size_t run_ = 0;       // data bytes in the current block
  bool open_ = false;
  size_t payload_length_ = 0;
  Crc32 crc_;
  uint8_t* capture_ = nullptr;
  size_t capture_capacity_ = 0;
};

// ---------------------------------------------------------------- payloads
inline uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
inline void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void StoreU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace protocol
}  // namespace hil

#endif  // HIL_PROTOCOL_H_
