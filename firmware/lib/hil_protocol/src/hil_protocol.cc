// tinyhil wire protocol: the codec (see hil_protocol.h, docs/protocol.md).
#include "hil_protocol.h"

#include <cstring>

namespace hil {
namespace protocol {

const char* StatusName(Status status) {
  switch (status) {
    case Status::kOk:
      return "OK";
    case Status::kCobs:
      return "COBS";
    case Status::kShort:
      return "SHORT";
    case Status::kCrc:
      return "CRC";
    case Status::kTooLong:
      return "TOO_LONG";
    case Status::kNoSpace:
      return "NO_SPACE";
    case Status::kBadArgument:
      return "BAD_ARGUMENT";
    case Status::kBusy:
      return "BUSY";
    case Status::kUnknownType:
      return "UNKNOWN_TYPE";
    case Status::kBadLength:
      return "BAD_LENGTH";
  }
  return "?";
}

// ---------------------------------------------------------------- CRC-32
namespace {
// Nibble table: 64 bytes of flash instead of 1 KiB, two lookups a byte.
constexpr uint32_t kCrcNibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu,
    0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};
}  // namespace

void Crc32::Update(const uint8_t* data, size_t length) {
  uint32_t c = state_;
  for (size_t i = 0; i < length; ++i) {
    c ^= data[i];
    c = (c >> 4) ^ kCrcNibble[c & 0x0F];
    c = (c >> 4) ^ kCrcNibble[c & 0x0F];
  }
  state_ = c;
}

uint32_t Crc32::Of(const uint8_t* data, size_t length) {
  Crc32 crc;
  crc.Update(data, length);
  return crc.Value();
}

// ---------------------------------------------------------------- COBS
Status CobsEncode(const uint8_t* in, size_t length, uint8_t* out,
                  size_t capacity, size_t* out_length) {
  if ((in == nullptr && length > 0) || out == nullptr || out_length == nullptr)
    return Status::kBadArgument;
  *out_length = 0;
  if (capacity < length + length / 254 + 1) return Status::kNoSpace;
  size_t code_pos = 0;
  size_t o = 1;
  uint8_t code = 1;
  for (size_t i = 0; i < length; ++i) {
    if (in[i] != 0) {
      out[o++] = in[i];
      ++code;
    }
    if (in[i] == 0 || code == 0xFF) {
      out[code_pos] = code;
      code_pos = o++;
      code = 1;
    }
  }
  // As StuffData: the last block is written even when a full block (0xFF)
  // ended the data, so 254 non-zero bytes end in 01.
  out[code_pos] = code;
  *out_length = o;
  return Status::kOk;
}

Status CobsDecode(const uint8_t* in, size_t length, uint8_t* out,
                  size_t capacity, size_t* out_length) {
  if ((in == nullptr && length > 0) || out_length == nullptr)
    return Status::kBadArgument;
  *out_length = 0;
  size_t o = 0;
  size_t i = 0;
  while (i < length) {
    const uint8_t code = in[i++];
    if (code == 0) return Status::kCobs;
    const size_t n = code - 1u;
    if (n > length - i) return Status::kCobs;
    for (size_t k = 0; k < n; ++k) {
      if (in[i] == 0) return Status::kCobs;
      if (o >= capacity) return Status::kTooLong;
      out[o++] = in[i++];
    }
    if (code != 0xFF && i < length) {
      if (o >= capacity) return Status::kTooLong;
      out[o++] = 0;
    }
  }
  *out_length = o;
  return Status::kOk;
}

// ---------------------------------------------------------------- frames
Status ParseBody(const uint8_t* body, size_t length, FrameView* frame) {
  if (body == nullptr || frame == nullptr) return Status::kBadArgument;
  if (length < kMinBody) return Status::kShort;
  const size_t n = length - kCrcSize;
  if (Crc32::Of(body, n) != LoadU32(body + n)) return Status::kCrc;
  frame->type = body[0];
  frame->flags = body[1];
  frame->seq = LoadU16(body + 2);
  frame->payload = body + kHeaderSize;
  frame->payload_length = n - kHeaderSize;
  return Status::kOk;
}

Status BuildBody(uint8_t type, uint8_t flags, uint16_t seq,
                 const uint8_t* payload, size_t payload_length, uint8_t* body,
                 size_t capacity, size_t* body_length) {
  if ((payload == nullptr && payload_length > 0) || body == nullptr ||
      body_length == nullptr) {
    return Status::kBadArgument;
  }
  *body_length = 0;
  if (payload_length > capacity || capacity - payload_length < kMinBody)
    return Status::kNoSpace;
  body[0] = type;
  body[1] = flags;
  StoreU16(body + 2, seq);
  if (payload_length > 0)
    std::memmove(body + kHeaderSize, payload, payload_length);
  const size_t n = kHeaderSize + payload_length;
  StoreU32(body + n, Crc32::Of(body, n));
  *body_length = n + kCrcSize;
  return Status::kOk;
}

namespace {
// Collects a FrameWriter's output in a caller's buffer.
class BufferSink : public ByteSink {
 public:
  BufferSink(uint8_t* buffer, size_t capacity)
      : buffer_(buffer), capacity_(capacity) {}
  void Write(const uint8_t* data, size_t length) override {
    if (length > capacity_ - used_) {
      overflow_ = true;
      length = capacity_ - used_;
    }
    std::memcpy(buffer_ + used_, data, length);
    used_ += length;
  }
  size_t used() const { return used_; }
  bool overflow() const { return overflow_; }

 private:
  uint8_t* buffer_;
  size_t capacity_;
  size_t used_ = 0;
  bool overflow_ = false;
};
}  // namespace

Status EncodeFrame(uint8_t type, uint8_t flags, uint16_t seq,
                   const uint8_t* payload, size_t payload_length, uint8_t* wire,
                   size_t capacity, size_t* wire_length) {
  if ((payload == nullptr && payload_length > 0) || wire == nullptr ||
      wire_length == nullptr) {
    return Status::kBadArgument;
  }
  *wire_length = 0;
  if (payload_length > kHostMaxBody - kMinBody) return Status::kTooLong;
  if (capacity < WireSize(payload_length + kMinBody)) return Status::kNoSpace;
  BufferSink sink(wire, capacity);
  FrameWriter writer(&sink);
  writer.Begin(type, flags, seq);
  writer.Put(payload, payload_length);
  writer.End();
  if (sink.overflow()) return Status::kNoSpace;
  *wire_length = sink.used();
  return Status::kOk;
}

Status DecodeFrame(const uint8_t* wire, size_t length, uint8_t* body,
                   size_t capacity, size_t* body_length) {
  if ((wire == nullptr && length > 0) || body == nullptr ||
      body_length == nullptr)
    return Status::kBadArgument;
  *body_length = 0;
  if (length > 0 && wire[length - 1] == 0) --length;
  size_t n = 0;
  Status s = CobsDecode(wire, length, body, capacity, &n);
  if (s != Status::kOk) return s;
  FrameView frame;
  s = ParseBody(body, n, &frame);
  if (s != Status::kOk) return s;
  *body_length = n;
  return Status::kOk;
}

Status CheckMessage(uint8_t type, const uint8_t* payload, size_t length) {
  if (payload == nullptr && length > 0) return Status::kBadArgument;
  size_t exact = 0;
  size_t at_least = 0;
  switch (type) {
    case kHello:
      exact = 8;
      break;
    case kInvoke:  // version 1 or version 2 form
      return length == kInvokeV1Size || length == kInvokeV2Size
                 ? Status::kOk
                 : Status::kBadLength;
    case kBoot:
      exact = 4;
      break;
    case kRead:
      return length == kReadV1Size || length == kReadV2Size
                 ? Status::kOk
                 : Status::kBadLength;
    case kNak:
    case kTraceRead:
      exact = 8;
      break;
    case kCaptureRead:
      exact = 12;
      break;
    case kTrace:
      return length >= kTraceHeaderSize &&
                     (length - kTraceHeaderSize) % kTraceRecordSize == 0
                 ? Status::kOk
                 : Status::kBadLength;
    case kCapture:
      at_least = kCaptureHeaderSize;
      break;
    case kAck:
      exact = 0;
      break;
    case kResult:
      exact = 24;
      break;
    case kWrite:
    case kData:
      at_least = 8;
      break;
    case kError:
      at_least = 4;
      break;
    case kLog:
      at_least = 1;
      break;
    case kPing:
    case kPong:
      return Status::kOk;
    case kInfo: {
      // Fixed part, two str8, the counts, then the descriptors; bytes after
      // them belong to later versions.
      size_t pos = 60;
      if (length < pos) return Status::kBadLength;
      for (int s = 0; s < 2; ++s) {
        if (pos >= length || length - pos - 1 < payload[pos])
          return Status::kBadLength;
        pos += 1u + payload[pos];
      }
      if (length - pos < 2) return Status::kBadLength;
      const int tensors = payload[pos] + payload[pos + 1];
      pos += 2;
      for (int t = 0; t < tensors; ++t) {
        if (length - pos < 4) return Status::kBadLength;
        const size_t need = 4u + 4u * payload[pos + 1] + 12u;
        if (length - pos < need) return Status::kBadLength;
        pos += need;
      }
      // version 2 appends line_baud, staging_bytes, features, input_slots
      if (LoadU16(payload) < 2) return Status::kOk;
      if (length - pos < 16) return Status::kBadLength;
      // FEATURE_TRACE appends n_ops, capture_bytes, tick_hz
      if ((LoadU32(payload + pos + 8) & kFeatureTrace) != 0 &&
          length - pos - 16 < kInfoTraceSize)
        return Status::kBadLength;
      return Status::kOk;
    }
    default:
      return Status::kUnknownType;
  }
  if (at_least > 0)
    return length >= at_least ? Status::kOk : Status::kBadLength;
  return length == exact ? Status::kOk : Status::kBadLength;
}

// ---------------------------------------------------------------- receiver
void FrameReceiver::Reset() {
  length_ = 0;
  wire_bytes_ = 0;
  code_ = 0;
  remaining_ = 0;
  error_ = Status::kOk;
}

FrameReceiver::Event FrameReceiver::Drop(Status why) {
  last_error_ = why;
  switch (why) {
    case Status::kCobs:
      ++counters_.cobs;
      break;
    case Status::kShort:
      ++counters_.short_body;
      break;
    case Status::kCrc:
      ++counters_.crc;
      break;
    default:
      ++counters_.too_long;
      break;
  }
  Reset();
  return Event::kDropped;
}

FrameReceiver::Event FrameReceiver::Push(uint8_t byte) {
  if (byte == 0) {
    if (wire_bytes_ == 0) return Event::kNone;  // empty frame: ignored
    if (error_ != Status::kOk) return Drop(error_);
    if (remaining_ != 0) return Drop(Status::kCobs);  // block cut short
    const Status s = ParseBody(buffer_, length_, &frame_);
    if (s != Status::kOk) return Drop(s);
    ++counters_.frames;
    Reset();
    return Event::kFrame;
  }
  ++wire_bytes_;
  if (error_ != Status::kOk) return Event::kNone;  // skipping to the next 0x00
  if (remaining_ == 0) {
    // A new block: the previous one (unless it was full) ended in a zero.
    if (wire_bytes_ > 1 && code_ != 0xFF) {
      if (length_ >= capacity_) {
        error_ = Status::kTooLong;
        return Event::kNone;
      }
      buffer_[length_++] = 0;
    }
    code_ = byte;
    remaining_ = static_cast<uint8_t>(byte - 1);
    return Event::kNone;
  }
  if (length_ >= capacity_) {
    error_ = Status::kTooLong;
    return Event::kNone;
  }
  buffer_[length_++] = byte;
  --remaining_;
  return Event::kNone;
}

// ---------------------------------------------------------------- writer
Status FrameWriter::Begin(uint8_t type, uint8_t flags, uint16_t seq) {
  if (open_) return Status::kBusy;
  open_ = true;
  used_ = 0;
  code_pos_ = 0;
  run_ = 0;
  crc_ = Crc32();
  uint8_t header[kHeaderSize] = {type, flags, static_cast<uint8_t>(seq),
                                 static_cast<uint8_t>(seq >> 8)};
  crc_.Update(header, sizeof(header));
  PutRaw(header, sizeof(header));
  payload_length_ = 0;
  return Status::kOk;
}

void FrameWriter::Put(const uint8_t* data, size_t length) {
  if (!open_ || length == 0) return;
  crc_.Update(data, length);
  if (capture_ != nullptr && payload_length_ < capture_capacity_) {
    size_t n = capture_capacity_ - payload_length_;
    if (n > length) n = length;
    std::memcpy(capture_ + payload_length_, data, n);
  }
  payload_length_ += length;
  PutRaw(data, length);
}

void FrameWriter::PutU16(uint16_t v) {
  uint8_t b[2];
  StoreU16(b, v);
  Put(b, 2);
}

void FrameWriter::PutU32(uint32_t v) {
  uint8_t b[4];
  StoreU32(b, v);
  Put(b, 4);
}

void FrameWriter::PutU64(uint64_t v) {
  PutU32(static_cast<uint32_t>(v));
  PutU32(static_cast<uint32_t>(v >> 32));
}

void FrameWriter::PutF32(float v) {
  static_assert(sizeof(float) == 4, "f32 must be binary32");
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  PutU32(bits);
}

void FrameWriter::FinishBlock() {
  stage_[code_pos_] = static_cast<uint8_t>(run_ + 1);
  used_ = code_pos_ + 1 + run_;
  run_ = 0;
  // Room for the next whole block (code + 254) and a delimiter, else flush.
  if (kTxStage - used_ < 256) Flush();
  code_pos_ = used_;
}

void FrameWriter::Flush() {
  if (used_ > 0) sink_->Write(stage_, used_);
  used_ = 0;
}

void FrameWriter::PutRaw(const uint8_t* data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    if (data[i] == 0) {
      FinishBlock();
    } else {
      stage_[code_pos_ + 1 + run_] = data[i];
      ++run_;
      if (run_ == 254) {
        FinishBlock();
      }
    }
  }
}

Status FrameWriter::End() {
  if (!open_) return Status::kBadArgument;
  uint8_t crc[kCrcSize];
  StoreU32(crc, crc_.Value());
  PutRaw(crc, sizeof(crc));
  FinishBlock();  // the last block, even when empty after a full one
  // FinishBlock leaves room for at least one more byte.
  stage_[used_++] = 0;
  Flush();
  code_pos_ = 0;
  open_ = false;
  return Status::kOk;
}

}  // namespace protocol
}  // namespace hil
