// tinyhil wire protocol: the device side (see hil_dispatcher.h).
#include "hil_dispatcher.h"

#include <cstring>

namespace hil {
namespace protocol {

namespace {

// DATA bytes that fit one frame of kMaxFrame: header, DATA header, CRC.
constexpr size_t kMaxDataChunk = MaxChunk(kMaxFrame);
constexpr size_t kMaxErrorText = kMaxFrame - kMinBody - 4;

bool IsRequest(uint8_t type) {
  return type == kHello || type == kWrite || type == kInvoke || type == kRead ||
         type == kPing || type == kTraceRead || type == kCaptureRead;
}

// The ERROR text for a request whose payload CheckMessage refused.
const char* BadLengthText(uint8_t type) {
  switch (type) {
    case kHello:
      return "HELLO takes 8 bytes";
    case kWrite:
      return "WRITE takes 8 bytes + data";
    case kInvoke:
      return "INVOKE takes 4 bytes (12 in version 2)";
    case kRead:
      return "READ takes 12 bytes (16 in version 2)";
    case kTraceRead:
      return "TRACE_READ takes 8 bytes";
    case kCaptureRead:
      return "CAPTURE_READ takes 12 bytes";
    default:
      return "payload does not fit its type";
  }
}

uint16_t NextSeq(uint16_t seq) {
  return static_cast<uint16_t>(seq % 0xFFFFu + 1u);
}

// How many requests `b` comes after `a` (mod 65535), in -32767 .. 32767.
int32_t SeqDistance(uint16_t a, uint16_t b) {
  int32_t d = (static_cast<int32_t>(b) - static_cast<int32_t>(a)) % 0xFFFF;
  if (d < 0) d += 0xFFFF;
  return d > 0x7FFF ? d - 0xFFFF : d;
}

size_t BoundedLength(const char* text, size_t limit) {
  size_t n = 0;
  if (text == nullptr) return 0;
  while (n < limit && text[n] != '\0') ++n;
  return n;
}

}  // namespace

Dispatcher::Dispatcher(Backend* backend, ByteSink* sink)
    : backend_(backend),
      writer_(sink),
      rx_{},
      receiver_(rx_, sizeof(rx_)),
      coverage_{},
      memory_{},
      staging_{},
      slot_coverage_{} {}

Status Dispatcher::Feed(const uint8_t* data, size_t length) {
  if (data == nullptr && length > 0) return Status::kBadArgument;
  for (size_t i = 0; i < length; ++i) {
    const FrameReceiver::Event event = receiver_.Push(data[i]);
    if (event == FrameReceiver::Event::kFrame) {
      Handle(receiver_.frame());
    } else if (event == FrameReceiver::Event::kDropped && version_ >= 2 &&
               expect_valid_) {
      // Most likely the request expected next was garbled: ask for it now
      // rather than at the host's timeout.
      SendNak(expect_, 1, kNakBadFrame);
      expect_ = NextSeq(expect_);
    }
  }
  return Status::kOk;
}

void Dispatcher::SendNak(uint16_t first, uint16_t count, uint16_t reason) {
  if (writer_.open()) return;
  ++counters_.naks;
  writer_.Begin(kNak, 0, 0);
  writer_.PutU16(first);
  writer_.PutU16(count);
  writer_.PutU16(reason);
  writer_.PutU16(0);
  writer_.End();
}

// Version 2: a request that skips numbers reveals the ones lost before it.
void Dispatcher::Track(const FrameView& request) {
  if (version_ < 2 || !expect_valid_ || !IsRequest(request.type)) return;
  const uint16_t first = expect_;
  const int32_t d = SeqDistance(first, request.seq);
  if (d < 0) return;  // a retransmission
  expect_ = NextSeq(request.seq);
  if (d > 0 && d <= 4 * kRxWindow)
    SendNak(first, static_cast<uint16_t>(d), kNakGap);
}

Status Dispatcher::SendBoot(uint32_t boot_nonce) {
  const Status s = writer_.Begin(kBoot, 0, 0);
  if (s != Status::kOk) return s;
  writer_.PutU32(boot_nonce);
  return writer_.End();
}

Status Dispatcher::Log(LogLevel level, const char* text, size_t length) {
  if (text == nullptr && length > 0) return Status::kBadArgument;
  if (writer_.open()) {
    ++counters_.logs_dropped;
    return Status::kBusy;
  }
  if (length > kMaxLog) length = kMaxLog;
  writer_.Begin(kLog, 0, 0);
  writer_.PutU8(static_cast<uint8_t>(level));
  writer_.Put(reinterpret_cast<const uint8_t*>(text), length);
  return writer_.End();
}

// ---------------------------------------------------------------- requests
Dispatcher::Remembered* Dispatcher::Find(uint16_t seq) {
  for (Remembered& m : memory_) {
    if (m.used && m.seq == seq) return &m;
  }
  return nullptr;
}

void Dispatcher::Handle(const FrameView& request) {
  ++counters_.requests;
  if (request.type == kHello) {
    // A HELLO starts a session. A new host process numbers its requests
    // from 1 again, so the old session's memory must go; the HELLO's nonce
    // tells a new session from a retransmitted HELLO of the current one.
    const bool well_formed =
        CheckMessage(kHello, request.payload, request.payload_length) ==
        Status::kOk;
    const bool same = hello_seen_ && well_formed && request.seq == hello_seq_ &&
                      LoadU32(request.payload + 4) == hello_nonce_;
    if (same) {
      ++counters_.duplicates;
    } else {
      for (Remembered& m : memory_) m.used = false;
      ClearInputs();
      for (auto& slot : slot_coverage_) {
        for (Coverage& c : slot) c.count = 0;
      }
      hello_seen_ = well_formed;
      hello_seq_ = request.seq;
      hello_nonce_ = hello_seen_ ? LoadU32(request.payload + 4) : 0;
    }
    Execute(request);  // no side effect: INFO (or the error) again
    return;
  }
  Track(request);
  Remembered* seen = Find(request.seq);
  if (seen != nullptr && seen->request_type == request.type) {
    ++counters_.duplicates;
    if (seen->stored) {
      writer_.Begin(seen->response_type, 0, request.seq);
      writer_.Put(seen->payload, seen->length);
      writer_.End();
    } else {
      Execute(request);  // no side effect: the same answer again
    }
    return;
  }
  if (seen != nullptr)
    seen->used = false;  // the seq was reused for another request
  Remembered& slot = memory_[next_memory_];
  next_memory_ = (next_memory_ + 1) % kDupEntries;
  slot.used = false;
  writer_.Capture(slot.payload, sizeof(slot.payload));
  Execute(request);
  writer_.Capture(nullptr, 0);
  slot.used = true;
  slot.seq = request.seq;
  slot.request_type = request.type;
  slot.response_type = response_type_;
  slot.stored = writer_.payload_length() <= sizeof(slot.payload);
  slot.length =
      slot.stored ? static_cast<uint8_t>(writer_.payload_length()) : 0;
}

void Dispatcher::Execute(const FrameView& request) {
  const Status check =
      CheckMessage(request.type, request.payload, request.payload_length);
  if (check == Status::kUnknownType || !IsRequest(request.type)) {
    SendError(request.seq, kErrUnknownType, "unknown request type");
    return;
  }
  if (check != Status::kOk) {
    SendError(request.seq, kErrBadLength, BadLengthText(request.type));
    return;
  }
  switch (request.type) {
    case kHello:
      HandleHello(request);
      return;
    case kWrite:
      HandleWrite(request);
      return;
    case kInvoke:
      HandleInvoke(request);
      return;
    case kRead:
      HandleRead(request);
      return;
    case kTraceRead:
      HandleTraceRead(request);
      return;
    case kCaptureRead:
      HandleCaptureRead(request);
      return;
    case kPing:
      response_type_ = kPong;
      writer_.Begin(kPong, 0, request.seq);
      writer_.Put(request.payload, request.payload_length);
      writer_.End();
      return;
    default:  // IsRequest() holds only the cases above
      return;
  }
}

bool Dispatcher::RefuseNotReady(uint16_t seq) {
  const char* reason = backend_->NotReadyReason();
  if (reason == nullptr && backend_->NumInputs() > kMaxInputs) {
    reason = "the model has more inputs than HIL_MAX_INPUTS";
  }
  if (reason == nullptr &&
      (backend_->NumInputs() > 255 || backend_->NumOutputs() > 255 ||
       backend_->NumInputs() < 0 || backend_->NumOutputs() < 0)) {
    reason = "tensor count out of range";
  }
  if (reason == nullptr) return false;
  SendError(seq, kErrNotReady, reason);
  return true;
}

void Dispatcher::HandleHello(const FrameView& request) {
  const uint16_t version_min = LoadU16(request.payload);
  const uint16_t version_max = LoadU16(request.payload + 2);
  const uint16_t chosen =
      version_max < max_version_ ? version_max : max_version_;
  if (chosen < version_min || chosen < kProtocolVersionMin) {
    SendError(request.seq, kErrVersion,
              max_version_ >= 2 ? "device speaks protocol versions 1..2"
                                : "device speaks protocol version 1 only");
    return;
  }
  if (RefuseNotReady(request.seq)) return;
  version_ = chosen;
  expect_ = NextSeq(request.seq);
  expect_valid_ = true;
  ComputeLayout();
  const int n_in = backend_->NumInputs();
  const int n_out = backend_->NumOutputs();
  TensorSpec spec;
  for (int i = 0; i < n_in + n_out; ++i) {
    if (!backend_->GetTensorSpec(i >= n_in, i >= n_in ? i - n_in : i, &spec) ||
        spec.ndims > kMaxDims) {
      SendError(request.seq, kErrNotReady, "tensor description unavailable");
      return;
    }
  }
  DeviceInfo info{};
  backend_->GetInfo(&info);
  static const uint8_t kNoSha[32] = {};
  const size_t firmware_len = BoundedLength(info.firmware, 255);
  const size_t board_len = BoundedLength(info.board, 255);

  response_type_ = kInfo;
  writer_.Begin(kInfo, 0, request.seq);
  writer_.PutU16(version_);
  writer_.PutU16(info.flags);
  writer_.PutU32(static_cast<uint32_t>(kMaxFrame));
  writer_.PutU16(kRxWindow);
  writer_.PutU16(0);
  writer_.PutU32(info.arena_size);
  writer_.PutU32(info.arena_used);
  writer_.PutU32(info.model_size);
  writer_.Put(info.model_sha256 != nullptr ? info.model_sha256 : kNoSha, 32);
  writer_.PutU32(info.cpu_hz);
  writer_.PutU8(static_cast<uint8_t>(firmware_len));
  writer_.Put(reinterpret_cast<const uint8_t*>(info.firmware), firmware_len);
  writer_.PutU8(static_cast<uint8_t>(board_len));
  writer_.Put(reinterpret_cast<const uint8_t*>(info.board), board_len);
  writer_.PutU8(static_cast<uint8_t>(n_in));
  writer_.PutU8(static_cast<uint8_t>(n_out));
  for (int i = 0; i < n_in + n_out; ++i) {
    backend_->GetTensorSpec(i >= n_in, i >= n_in ? i - n_in : i, &spec);
    writer_.PutU8(spec.dtype);
    writer_.PutU8(spec.ndims);
    writer_.PutU16(0);
    for (int d = 0; d < spec.ndims; ++d) writer_.PutI32(spec.dims[d]);
    writer_.PutF32(spec.scale);
    writer_.PutI32(spec.zero_point);
    writer_.PutU32(spec.nbytes);
  }
  if (version_ >= 2) {
    writer_.PutU32(info.line_baud);
    writer_.PutU32(static_cast<uint32_t>(kStagingBytes));
    writer_.PutU32(kFeatureNak |
                   (staged_outputs_ ? kFeatureStagedOutputs : 0u) |
                   (info.trace_ops > 0 ? kFeatureTrace : 0u));
    writer_.PutU8(static_cast<uint8_t>(slots_));
    writer_.PutU8(0);
    writer_.PutU16(0);
    if (info.trace_ops > 0) {
      writer_.PutU16(info.trace_ops);
      writer_.PutU16(0);
      writer_.PutU32(info.capture_bytes);
      writer_.PutU32(info.tick_hz);
    }
  }
  writer_.End();
}

// Staging layout: [slot 0: every input][slot 1: every input][outputs].
void Dispatcher::ComputeLayout() {
  input_total_ = 0;
  output_total_ = 0;
  TensorSpec spec;
  for (int i = 0; i < backend_->NumInputs(); ++i) {
    if (backend_->GetTensorSpec(false, i, &spec)) input_total_ += spec.nbytes;
  }
  for (int i = 0; i < backend_->NumOutputs(); ++i) {
    if (backend_->GetTensorSpec(true, i, &spec)) output_total_ += spec.nbytes;
  }
  const uint64_t both = 2ull * input_total_ + output_total_;
  slots_ = both <= kStagingBytes ? kInputSlots : 0;
  staged_outputs_ = (slots_ > 0 ? both : output_total_) <= kStagingBytes;
  if (!layout_done_) {
    outputs_valid_ = false;
    staged_valid_ = false;
  }
  layout_done_ = true;
}

uint8_t* Dispatcher::SlotInput(int slot, int input) {
  uint32_t offset = static_cast<uint32_t>(slot) * input_total_;
  TensorSpec spec;
  for (int i = 0; i < input; ++i) {
    if (backend_->GetTensorSpec(false, i, &spec)) offset += spec.nbytes;
  }
  return staging_ + offset;
}

uint8_t* Dispatcher::StagedOutput(int output) {
  uint32_t offset = static_cast<uint32_t>(slots_) * input_total_;
  TensorSpec spec;
  for (int i = 0; i < output; ++i) {
    if (backend_->GetTensorSpec(true, i, &spec)) offset += spec.nbytes;
  }
  return staging_ + offset;
}

bool Dispatcher::InputCrcMatches(int slot, uint32_t want) {
  Crc32 crc;
  TensorSpec spec;
  for (int i = 0; i < backend_->NumInputs(); ++i) {
    if (!backend_->GetTensorSpec(false, i, &spec)) return false;
    const uint8_t* data =
        slots_ > 0 ? SlotInput(slot, i) : backend_->InputBuffer(i);
    if (data == nullptr) return false;
    crc.Update(data, spec.nbytes);
  }
  return crc.Value() == want;
}

void Dispatcher::HandleWrite(const FrameView& request) {
  if (RefuseNotReady(request.seq)) return;
  const uint8_t tensor = request.payload[0];
  const uint32_t offset = LoadU32(request.payload + 4);
  const size_t length = request.payload_length - kChunkHeaderSize;
  TensorSpec spec;
  if (tensor >= backend_->NumInputs() ||
      !backend_->GetTensorSpec(false, tensor, &spec)) {
    SendError(request.seq, kErrBadTensor, "no such input tensor");
    return;
  }
  if (offset > spec.nbytes || length > spec.nbytes - offset) {
    SendError(request.seq, kErrOutOfRange,
              "WRITE beyond the end of the tensor");
    return;
  }
  // Version 2 with staging: the bytes go to the slot the WRITE names, so the
  // next sample streams in while this one waits for its INVOKE.
  const uint8_t slot = version_ >= 2 ? request.payload[1] : 0;
  if (version_ >= 2 && slot >= (slots_ > 0 ? slots_ : 1)) {
    SendError(request.seq, kErrBadTensor, "no such input slot");
    return;
  }
  uint8_t* buffer = slots_ > 0 && version_ >= 2 ? SlotInput(slot, tensor)
                                                : backend_->InputBuffer(tensor);
  if (buffer == nullptr) {
    SendError(request.seq, kErrNotReady, "input tensor has no buffer");
    return;
  }
  if (length > 0) {
    std::memcpy(buffer + offset, request.payload + kChunkHeaderSize, length);
    Cover(slots_ > 0 && version_ >= 2 ? slot_coverage_[slot] : coverage_,
          tensor, offset, static_cast<uint32_t>(offset + length));
  }
  SendEmpty(kAck, request.seq);
}

void Dispatcher::HandleInvoke(const FrameView& request) {
  if (RefuseNotReady(request.seq)) return;
  const bool v2 = request.payload_length == kInvokeV2Size;
  if (v2 && version_ < 2) {
    SendError(request.seq, kErrBadLength, "INVOKE takes 4 bytes");
    return;
  }
  const uint32_t sample_id = LoadU32(request.payload);
  const uint8_t slot = v2 ? request.payload[8] : 0;
  // In version 2 every WRITE went to a slot (0 in the version-1 form).
  const bool staged_in = version_ >= 2 && slots_ > 0;
  if (slot >= (staged_in ? slots_ : 1)) {
    SendError(request.seq, kErrBadTensor, "no such input slot");
    return;
  }
  Coverage* set = staged_in ? slot_coverage_[slot] : coverage_;
  const int n_in = backend_->NumInputs();
  for (int i = 0; i < n_in; ++i) {
    TensorSpec spec;
    if (!backend_->GetTensorSpec(false, i, &spec) ||
        !Complete(set, i, spec.nbytes)) {
      SendError(request.seq, kErrIncompleteInput,
                "an input was not fully written");
      return;
    }
  }
  // Version 2: run on exactly the input the host names, never on a mix.
  if (v2 && !InputCrcMatches(slot, LoadU32(request.payload + 4))) {
    ++counters_.mismatches;
    SendError(request.seq, kErrInputMismatch,
              "the inputs' CRC-32 is not the INVOKE's");
    return;
  }
  if (staged_in) {
    for (int i = 0; i < n_in; ++i) {
      TensorSpec spec;
      uint8_t* tensor = backend_->InputBuffer(i);
      if (!backend_->GetTensorSpec(false, i, &spec) || tensor == nullptr) {
        SendError(request.seq, kErrNotReady, "input tensor has no buffer");
        return;
      }
      std::memcpy(tensor, SlotInput(slot, i), spec.nbytes);
    }
  }
  // The previous sample's outputs stay readable while this one runs.
  if (staged_outputs_ && outputs_valid_) {
    for (int i = 0; i < backend_->NumOutputs(); ++i) {
      TensorSpec spec;
      const uint8_t* out = backend_->OutputBuffer(i);
      if (backend_->GetTensorSpec(true, i, &spec) && out != nullptr)
        std::memcpy(StagedOutput(i), out, spec.nbytes);
    }
    staged_sample_ = live_sample_;
    staged_valid_ = true;
  }
  backend_->PrepareInvoke(sample_id, v2 ? request.payload[9] : 0,
                          v2 ? LoadU16(request.payload + 10) : 0);
  uint32_t invoke_us = 0;
  uint64_t cycles = 0;
  const int32_t status = backend_->Invoke(&invoke_us, &cycles);
  for (int i = 0; i < kMaxInputs; ++i) set[i].count = 0;
  outputs_valid_ = status == 0;
  live_sample_ = sample_id;
  if (status != 0) {
    SendError(request.seq, kErrInvokeFailed, "Invoke() failed");
    return;
  }
  response_type_ = kResult;
  writer_.Begin(kResult, 0, request.seq);
  writer_.PutU32(sample_id);
  writer_.PutU32(static_cast<uint32_t>(status));
  writer_.PutU32(invoke_us);
  writer_.PutU32(0);
  writer_.PutU64(cycles);
  writer_.End();
}

void Dispatcher::HandleRead(const FrameView& request) {
  if (RefuseNotReady(request.seq)) return;
  const uint8_t tensor = request.payload[0];
  const uint32_t offset = LoadU32(request.payload + 4);
  uint32_t length = LoadU32(request.payload + 8);
  TensorSpec spec;
  if (tensor >= backend_->NumOutputs() ||
      !backend_->GetTensorSpec(true, tensor, &spec)) {
    SendError(request.seq, kErrBadTensor, "no such output tensor");
    return;
  }
  if (offset > spec.nbytes || length > spec.nbytes - offset) {
    SendError(request.seq, kErrOutOfRange, "READ beyond the end of the tensor");
    return;
  }
  const uint8_t* buffer = backend_->OutputBuffer(tensor);
  if (request.payload_length == kReadV2Size) {
    if (version_ < 2) {
      SendError(request.seq, kErrBadLength, "READ takes 12 bytes");
      return;
    }
    // Version 2: the outputs of the sample named, from the tensors or staging.
    const uint32_t sample_id = LoadU32(request.payload + 12);
    if (outputs_valid_ && live_sample_ == sample_id) {
      // the tensors hold them
    } else if (staged_valid_ && staged_sample_ == sample_id) {
      buffer = StagedOutput(tensor);
    } else {
      SendError(request.seq, kErrStale,
                "the outputs of that sample are not held");
      return;
    }
  }
  if (buffer == nullptr) {
    SendError(request.seq, kErrNotReady, "output tensor has no buffer");
    return;
  }
  if (length > kMaxDataChunk) length = static_cast<uint32_t>(kMaxDataChunk);
  response_type_ = kData;
  writer_.Begin(kData, 0, request.seq);
  writer_.PutU8(tensor);
  writer_.PutU8(0);
  writer_.PutU16(0);
  writer_.PutU32(offset);
  writer_.Put(buffer + offset, length);
  writer_.End();
}

void Dispatcher::SendEmpty(uint8_t type, uint16_t seq) {
  response_type_ = type;
  writer_.Begin(type, 0, seq);
  writer_.End();
}

void Dispatcher::SendError(uint16_t seq, uint16_t code, const char* message) {
  ++counters_.errors;
  response_type_ = kError;
  writer_.Begin(kError, 0, seq);
  writer_.PutU16(code);
  writer_.PutU16(0);
  writer_.Put(reinterpret_cast<const uint8_t*>(message),
              BoundedLength(message, kMaxErrorText));
  writer_.End();
}

// ---------------------------------------------------------------- inputs
void Dispatcher::ClearInputs() {
  for (Coverage& c : coverage_) c.count = 0;
}

void Dispatcher::Cover(Coverage* set, int input, uint32_t begin, uint32_t end) {
  if (input < 0 || input >= kMaxInputs || begin >= end) return;
  Coverage& c = set[input];
  // Merge every range that touches [begin, end), then keep the rest sorted
  // out of order: only the union matters.
  int kept = 0;
  for (int i = 0; i < c.count; ++i) {
    const Range r = c.ranges[i];
    if (r.begin <= end && begin <= r.end) {
      if (r.begin < begin) begin = r.begin;
      if (r.end > end) end = r.end;
    } else {
      c.ranges[kept++] = r;
    }
  }
  c.count = static_cast<uint8_t>(kept);
  // Out of room (more gaps than the window allows): the range is forgotten,
  // INVOKE answers INCOMPLETE_INPUT and the host repeats the sample.
  if (c.count < kInputRanges) c.ranges[c.count++] = Range{begin, end};
}

bool Dispatcher::Complete(const Coverage* set, int input,
                          uint32_t nbytes) const {
  if (nbytes == 0) return true;
  if (input < 0 || input >= kMaxInputs) return false;
  const Coverage& c = set[input];
  return c.count == 1 && c.ranges[0].begin == 0 && c.ranges[0].end >= nbytes;
}

void Dispatcher::HandleTraceRead(const FrameView& request) {
  if (RefuseNotReady(request.seq)) return;
  const uint32_t sample_id = LoadU32(request.payload);
  const uint16_t first = LoadU16(request.payload + 4);
  const uint16_t count = LoadU16(request.payload + 6);
  uint16_t n_ops = 0;
  uint32_t crc = 0;
  uint32_t ticks = 0;
  if (!backend_->TraceRecord(sample_id, 0, &n_ops, &crc, &ticks)) {
    SendError(request.seq, kErrStale, "no trace of that sample held");
    return;
  }
  if (first > n_ops) {
    SendError(request.seq, kErrOutOfRange, "operator beyond the model's");
    return;
  }
  constexpr size_t kPerFrame =
      (kMaxFrame - kMinBody - kTraceHeaderSize) / kTraceRecordSize;
  size_t end = first + static_cast<size_t>(count);
  if (end > n_ops) end = n_ops;
  if (end - first > kPerFrame) end = first + kPerFrame;
  response_type_ = kTrace;
  writer_.Begin(kTrace, 0, request.seq);
  writer_.PutU32(sample_id);
  writer_.PutU16(n_ops);
  writer_.PutU16(first);
  for (size_t op = first; op < end; ++op) {
    backend_->TraceRecord(sample_id, static_cast<uint16_t>(op), &n_ops, &crc,
                          &ticks);
    writer_.PutU32(crc);
    writer_.PutU32(ticks);
  }
  writer_.End();
}

void Dispatcher::HandleCaptureRead(const FrameView& request) {
  if (RefuseNotReady(request.seq)) return;
  const uint32_t sample_id = LoadU32(request.payload);
  const uint32_t offset = LoadU32(request.payload + 4);
  uint32_t length = LoadU32(request.payload + 8);
  uint16_t first = 0;
  uint16_t n_ops = 0;
  uint32_t total = 0;
  const uint8_t* data = backend_->CaptureOf(sample_id, &first, &n_ops, &total);
  if (data == nullptr) {
    SendError(request.seq, kErrStale, "no capture of that sample held");
    return;
  }
  if (offset > total) {
    SendError(request.seq, kErrOutOfRange, "capture offset beyond its bytes");
    return;
  }
  constexpr size_t kChunk = kMaxFrame - kMinBody - kCaptureHeaderSize;
  if (length > total - offset) length = total - offset;
  if (length > kChunk) length = kChunk;
  response_type_ = kCapture;
  writer_.Begin(kCapture, 0, request.seq);
  writer_.PutU32(sample_id);
  writer_.PutU16(first);
  writer_.PutU16(n_ops);
  writer_.PutU32(total);
  writer_.PutU32(offset);
  writer_.Put(data + offset, length);
  writer_.End();
}

}  // namespace protocol
}  // namespace hil
