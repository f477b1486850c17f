// The model runner (see hil_runner.h). Also TFLM's logging seam: this file
// defines DebugLog and DebugVsnprintf (tensorflow/lite/micro/debug_log.h),
// so TFLM's own debug_log.cc must be left out of the TFLM library (the
// hil-offline PlatformIO platform and harness/tflm.py do that).
#include "hil_runner.h"

#include <cstdarg>
#include <cstring>
#include <new>

#include "hil_board.h"
#include "hil_format.h"
#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/compatibility.h"
#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/micro/micro_time.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace hil {
namespace runner {

namespace {

#ifdef HIL_ARENA_SIZE
constexpr size_t kArenaSize =
    (static_cast<size_t>(HIL_ARENA_SIZE) + 15u) & ~static_cast<size_t>(15u);
#else
constexpr size_t kArenaSize = kHilArenaSize;
#endif
static_assert(kArenaSize % 16 == 0 && kArenaSize > 0,
              "the arena must be a positive multiple of 16 bytes");
static_assert(kHilMaxDims <= protocol::kMaxDims,
              "model_data.h allows more dims than the protocol");

// A board may place the arena in a given RAM
// (-DHIL_ARENA_SECTION=".bss.sram2").
#ifdef HIL_ARENA_SECTION
__attribute__((section(HIL_ARENA_SECTION)))
#endif
alignas(16) uint8_t g_arena[kArenaSize];

// The interpreter with its evaluation tensors in reach: during the
// profiler's EndEvent an operator's outputs are still live under the normal
// memory planner, so the trace needs no preserved tensors (no extra arena).
class TracingInterpreter : public tflite::MicroInterpreter {
 public:
  using tflite::MicroInterpreter::MicroInterpreter;
  TfLiteEvalTensor* EvalTensor(int index) const {
    return context().GetEvalTensor(&context(), index);
  }
};

// The per-operator trace (FEATURE_TRACE): 8 bytes of RAM per operator,
// filled in EndEvent, which TFLM calls once per operator in execution order.
// TFLM's own MicroProfiler keeps 4096 events; this keeps what the wire sends.
struct TraceRecord {
  uint32_t crc;    // CRC-32 of the operator's output tensors, in order
  uint32_t ticks;  // tflite::GetCurrentTimeTicks() from Begin to End
};
TraceRecord g_trace[kHilNumOperators];

#if HIL_CAPTURE_BYTES > 0
uint8_t g_capture[HIL_CAPTURE_BYTES];
#endif

// CRC-32 (zlib.crc32) sliced by 4: the trace checksums every operator's
// outputs, so it must cost little next to the operator (the protocol's
// nibble-table CRC is smaller but ~4x slower). 4 KB of tables in flash.
struct CrcTables {
  uint32_t t[4][256];
};
constexpr CrcTables MakeCrcTables() {
  CrcTables x{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    x.t[0][i] = c;
  }
  for (int s = 1; s < 4; ++s) {
    for (uint32_t i = 0; i < 256; ++i) {
      x.t[s][i] = (x.t[s - 1][i] >> 8) ^ x.t[0][x.t[s - 1][i] & 0xFFu];
    }
  }
  return x;
}
constexpr CrcTables kCrc = MakeCrcTables();

uint32_t CrcUpdate(uint32_t c, const uint8_t* p, size_t n) {
  for (; n >= 4; p += 4, n -= 4) {
    c ^= static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
    c = kCrc.t[3][c & 0xFFu] ^ kCrc.t[2][(c >> 8) & 0xFFu] ^
        kCrc.t[1][(c >> 16) & 0xFFu] ^ kCrc.t[0][c >> 24];
  }
  for (; n > 0; --n) c = (c >> 8) ^ kCrc.t[0][(c ^ *p++) & 0xFFu];
  return c;
}

class TraceProfiler : public tflite::MicroProfilerInterface {
 public:
  void Bind(const TracingInterpreter* interpreter, const tflite::Model* model) {
    interpreter_ = interpreter;
    operators_ = model->subgraphs()->Get(0)->operators();
  }
  void Arm(uint8_t options, uint16_t capture_op) {
    options_ = options;
    capture_op_ = capture_op;
    next_op_ = 0;
    depth_ = 0;
    capture_length_ = 0;
    capture_ops_ = 0;
  }
  // Keeps the last invoke's capture readable.
  void Disarm() { options_ = 0; }
  uint8_t options() const { return options_; }
  int operators_done() const { return next_op_; }
  uint32_t capture_length() const { return capture_length_; }
  uint16_t capture_ops() const { return capture_ops_; }
  uint16_t capture_first() const { return capture_op_; }

  uint32_t BeginEvent(const char* /*tag*/) override {
    if (depth_++ == 0) start_ = tflite::GetCurrentTimeTicks();
    return 0;
  }

  void EndEvent(uint32_t /*handle*/) override {
    if (depth_ == 0 || --depth_ > 0) return;  // only subgraph 0's operators
    const uint32_t ticks = tflite::GetCurrentTimeTicks() - start_;
    const int op = next_op_++;
    if (op >= kHilNumOperators) return;
#ifdef HIL_PERTURB_OP
    // Test-only fault: operator K computes something else; the operators
    // after it compute on from it (as a miscompiled kernel would).
    if (op == HIL_PERTURB_OP) Perturb(op);
#endif
    if (options_ & protocol::kInvokeTrace) {
      g_trace[op].ticks = ticks;
      g_trace[op].crc = OutputCrc(op);
    }
#if HIL_CAPTURE_BYTES > 0
    if ((options_ & protocol::kInvokeCapture) && op >= capture_op_ &&
        capture_length_ < HIL_CAPTURE_BYTES) {
      size_t n = 0;
      const uint8_t* data = Output(op, 0, &n);
      const size_t room = HIL_CAPTURE_BYTES - capture_length_;
      if (n > room) n = room;
      if (data != nullptr) std::memcpy(g_capture + capture_length_, data, n);
      capture_length_ += static_cast<uint32_t>(n);
      ++capture_ops_;
    }
#endif
  }

 private:
  // Output `i` of operator `op`: its bytes and their count, or nullptr.
  uint8_t* Output(int op, int i, size_t* bytes) const {
    *bytes = 0;
    const auto* outs = operators_->Get(op)->outputs();
    if (outs == nullptr || i >= static_cast<int>(outs->size())) return nullptr;
    const int index = outs->Get(i);
    if (index < 0) return nullptr;
    TfLiteEvalTensor* t = interpreter_->EvalTensor(index);
    if (t == nullptr || t->data.raw == nullptr ||
        tflite::TfLiteEvalTensorByteLength(t, bytes) != kTfLiteOk) {
      *bytes = 0;
      return nullptr;
    }
    return t->data.uint8;
  }

  uint32_t OutputCrc(int op) const {
    uint32_t crc = 0xFFFFFFFFu;
    const auto* outs = operators_->Get(op)->outputs();
    const int n = outs == nullptr ? 0 : static_cast<int>(outs->size());
    for (int i = 0; i < n; ++i) {
      size_t bytes = 0;
      const uint8_t* data = Output(op, i, &bytes);
      if (data != nullptr) crc = CrcUpdate(crc, data, bytes);
    }
    return ~crc;
  }

#ifdef HIL_PERTURB_OP
#ifndef HIL_PERTURB_LSB
#define HIL_PERTURB_LSB 1
#endif
  // Moves every element of the operator's first output by HIL_PERTURB_LSB
  // steps, saturating (harness.localize.perturb for int8/uint8/int16/int32).
  void Perturb(int op) const {
    const auto* outs = operators_->Get(op)->outputs();
    if (outs == nullptr || outs->size() == 0 || outs->Get(0) < 0) return;
    TfLiteEvalTensor* t = interpreter_->EvalTensor(outs->Get(0));
    size_t bytes = 0;
    if (t == nullptr ||
        tflite::TfLiteEvalTensorByteLength(t, &bytes) != kTfLiteOk)
      return;
    switch (t->type) {
      case kTfLiteInt8:
        Shift(t->data.int8, bytes, -128, 127);
        break;
      case kTfLiteUInt8:
        Shift(t->data.uint8, bytes, 0, 255);
        break;
      case kTfLiteInt16:
        Shift(t->data.i16, bytes / 2, -32768, 32767);
        break;
      case kTfLiteInt32:
        Shift(t->data.i32, bytes / 4, INT32_MIN, INT32_MAX);
        break;
      default:
        break;
    }
  }
  template <typename T>
  static void Shift(T* v, size_t n, int64_t lo, int64_t hi) {
    for (size_t i = 0; i < n; ++i) {
      int64_t x = static_cast<int64_t>(v[i]) + HIL_PERTURB_LSB;
      v[i] = static_cast<T>(x < lo ? lo : x > hi ? hi : x);
    }
  }
#endif

  const TracingInterpreter* interpreter_ = nullptr;
  const flatbuffers::Vector<flatbuffers::Offset<tflite::Operator>>* operators_ =
      nullptr;
  uint32_t start_ = 0;
  int depth_ = 0;
  int next_op_ = 0;
  uint8_t options_ = 0;
  uint16_t capture_op_ = 0;
  uint32_t capture_length_ = 0;
  uint16_t capture_ops_ = 0;

  // The virtual destructor must not pull in operator delete (no heap).
  TF_LITE_REMOVE_VIRTUAL_DELETE
};

HilOpResolver g_resolver;
TraceProfiler g_profiler;
alignas(TracingInterpreter) uint8_t
    g_interpreter_storage[sizeof(TracingInterpreter)];

// What the last traced invoke left (TraceRecord / CaptureOf).
bool g_trace_valid = false;
uint32_t g_trace_sample = 0;
bool g_capture_valid = false;
uint16_t g_capture_first = 0;
uint32_t g_next_sample = 0;

LogSink g_log_sink = nullptr;

// TFLM writes a line in pieces (MicroPrintf: the text, then "\r\n"); they
// are collected here and sent as one LOG frame per line.
char g_line[protocol::kMaxLog + 1];
size_t g_line_length = 0;

void FlushLine(protocol::LogLevel level) {
  size_t n = g_line_length;
  while (n > 0 && (g_line[n - 1] == '\r' || g_line[n - 1] == '\n')) --n;
  if (n > 0 && g_log_sink != nullptr) g_log_sink(level, g_line, n);
  g_line_length = 0;
}

// Appends formatted text; every '\n' ends a line.
void AppendLog(protocol::LogLevel level, const char* format, va_list args) {
  char piece[protocol::kMaxLog + 1];
  int n = FormatV(piece, sizeof(piece), format, args);
  if (n < 0) return;
  size_t length = static_cast<size_t>(n) < sizeof(piece)
                      ? static_cast<size_t>(n)
                      : sizeof(piece) - 1;
  for (size_t i = 0; i < length; ++i) {
    if (piece[i] == '\n') {
      FlushLine(level);
    } else if (g_line_length < protocol::kMaxLog) {
      g_line[g_line_length++] = piece[i];
    }
  }
}

uint8_t DtypeCode(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32:
      return kHilDtypeFloat32;
    case kTfLiteInt8:
      return kHilDtypeInt8;
    case kTfLiteUInt8:
      return kHilDtypeUint8;
    case kTfLiteInt16:
      return kHilDtypeInt16;
    case kTfLiteInt32:
      return kHilDtypeInt32;
    case kTfLiteFloat16:
      return kHilDtypeFloat16;
    case kTfLiteInt64:
      return kHilDtypeInt64;
    case kTfLiteBool:
      return kHilDtypeBool;
    default:
      return 0;
  }
}

// Does TFLM's tensor match what codegen wrote into model_data.h?
bool Matches(const TfLiteTensor* t, const HilTensorSpec& spec) {
  if (t == nullptr || t->data.raw == nullptr ||
      DtypeCode(t->type) != spec.dtype || t->bytes != spec.nbytes) {
    return false;
  }
  if (t->dims == nullptr || t->dims->size != spec.ndims) return false;
  for (int d = 0; d < spec.ndims; ++d) {
    if (t->dims->data[d] != spec.dims[d]) return false;
  }
  return true;
}

void FillSpec(const HilTensorSpec& in, protocol::TensorSpec* out) {
  *out = protocol::TensorSpec{};
  out->dtype = in.dtype;
  out->ndims = in.ndims;
  for (int d = 0; d < in.ndims && d < protocol::kMaxDims; ++d)
    out->dims[d] = in.dims[d];
  out->scale = in.scale;
  out->zero_point = in.zero_point;
  out->nbytes = in.nbytes;
}

}  // namespace

void SetLogSink(LogSink sink) { g_log_sink = sink; }

void Logf(protocol::LogLevel level, const char* format, ...) {
  va_list args;
  va_start(args, format);
  FlushLine(level);  // a partial TFLM line goes out first
  AppendLog(level, format, args);
  FlushLine(level);
  va_end(args);
}

bool TflmBackend::Fail(const char* format, ...) {
  va_list args;
  va_start(args, format);
  FormatV(reason_, sizeof(reason_), format, args);
  va_end(args);
  ready_ = false;
  Logf(protocol::kLogError, "model not ready: %s", reason_);
  return false;
}

bool TflmBackend::Init() {
  if (HilRegisterOps(g_resolver) != kTfLiteOk)
    return Fail("registering the model's %d operators failed", kHilNumOps);
  const tflite::Model* model = tflite::GetModel(kHilModelData);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    return Fail("model schema %u, TFLM supports %d",
                static_cast<unsigned>(model->version()), TFLITE_SCHEMA_VERSION);
  }
  if (model->subgraphs()->size() < 1 ||
      static_cast<int>(model->subgraphs()->Get(0)->operators()->size()) !=
          kHilNumOperators) {
    return Fail(
        "the model's operator count differs from model_ops.h: "
        "regenerate with hil codegen");
  }
  auto* interpreter = new (g_interpreter_storage) TracingInterpreter(
      model, g_resolver, g_arena, kArenaSize, nullptr, &g_profiler);
  g_profiler.Bind(interpreter, model);
  interpreter_ = interpreter;
  if (interpreter_->AllocateTensors() != kTfLiteOk) {
    return Fail(
        "AllocateTensors() failed with a %u-byte arena; rebuild with a larger "
        "HIL_ARENA_SIZE or "
        "hil codegen --arena-margin",
        static_cast<unsigned>(kArenaSize));
  }
  if (static_cast<int>(interpreter_->inputs_size()) != kHilNumInputs ||
      static_cast<int>(interpreter_->outputs_size()) != kHilNumOutputs) {
    return Fail("TFLM sees %u inputs/%u outputs, model_data.h says %d/%d",
                static_cast<unsigned>(interpreter_->inputs_size()),
                static_cast<unsigned>(interpreter_->outputs_size()),
                kHilNumInputs, kHilNumOutputs);
  }
  for (int i = 0; i < kHilNumInputs; ++i) {
    if (!Matches(interpreter_->input(i), kHilInputs[i])) {
      return Fail(
          "input %d differs from model_data.h (type, shape or size): "
          "regenerate with hil codegen",
          i);
    }
  }
  for (int i = 0; i < kHilNumOutputs; ++i) {
    if (!Matches(interpreter_->output(i), kHilOutputs[i])) {
      return Fail(
          "output %d differs from model_data.h (type, shape or size): "
          "regenerate with hil codegen",
          i);
    }
  }
  ready_ = true;
  Logf(protocol::kLogInfo, "model %s ready: %d ops, arena %u of %u bytes used",
       kHilModelName, kHilNumOps, static_cast<unsigned>(arena_used()),
       static_cast<unsigned>(kArenaSize));
  return true;
}

size_t TflmBackend::arena_size() const { return kArenaSize; }

size_t TflmBackend::arena_used() const {
  return interpreter_ != nullptr ? interpreter_->arena_used_bytes() : 0;
}

const char* TflmBackend::NotReadyReason() { return ready_ ? nullptr : reason_; }

void TflmBackend::GetInfo(protocol::DeviceInfo* info) {
#ifdef HIL_PERTURB_OP
  // A test build says so in every handshake (and so in every report).
  info->firmware = HIL_FIRMWARE_VERSION
      " TEST BUILD: operator " HIL_STR(HIL_PERTURB_OP) " perturbed";
#else
  info->firmware = HIL_FIRMWARE_VERSION;
#endif
  info->board = board::BoardId();
  info->model_sha256 = kHilModelSha256;
  info->model_size = kHilModelSize;
  info->arena_size = static_cast<uint32_t>(kArenaSize);
  info->arena_used = static_cast<uint32_t>(arena_used());
  info->cpu_hz = board::CpuHz();
  info->flags = board::HasCycleCounter() ? protocol::kInfoCyclesReal : 0;
  info->line_baud = HIL_LINE_BAUD;
#if !defined(TF_LITE_STRIP_ERROR_STRINGS)  // else TFLM calls no profiler
  info->trace_ops = static_cast<uint16_t>(kHilNumOperators);
  info->capture_bytes = HIL_CAPTURE_BYTES;
  info->tick_hz = tflite::ticks_per_second();
#endif
}

void TflmBackend::PrepareInvoke(uint32_t sample_id, uint8_t options,
                                uint16_t capture_op) {
  g_next_sample = sample_id;
  g_profiler.Arm(options, capture_op);
  if (options & protocol::kInvokeTrace) g_trace_valid = false;
  if (options & protocol::kInvokeCapture) g_capture_valid = false;
}

bool TflmBackend::TraceRecord(uint32_t sample_id, uint16_t op, uint16_t* n_ops,
                              uint32_t* crc, uint32_t* ticks) {
  if (!g_trace_valid || sample_id != g_trace_sample) return false;
  *n_ops = static_cast<uint16_t>(kHilNumOperators);
  if (op < kHilNumOperators) {
    *crc = g_trace[op].crc;
    *ticks = g_trace[op].ticks;
  }
  return true;
}

const uint8_t* TflmBackend::CaptureOf(uint32_t sample_id, uint16_t* first_op,
                                      uint16_t* n_ops, uint32_t* total) {
#if HIL_CAPTURE_BYTES > 0
  if (!g_capture_valid || sample_id != g_trace_sample) return nullptr;
  *first_op = g_capture_first;
  *n_ops = g_profiler.capture_ops();
  *total = g_profiler.capture_length();
  return g_capture;
#else
  (void)sample_id;
  (void)first_op;
  (void)n_ops;
  (void)total;
  return nullptr;
#endif
}

int TflmBackend::NumInputs() { return kHilNumInputs; }

int TflmBackend::NumOutputs() { return kHilNumOutputs; }

bool TflmBackend::GetTensorSpec(bool output, int index,
                                protocol::TensorSpec* spec) {
  if (index < 0 || index >= (output ? kHilNumOutputs : kHilNumInputs))
    return false;
  FillSpec(output ? kHilOutputs[index] : kHilInputs[index], spec);
  return true;
}

uint8_t* TflmBackend::InputBuffer(int index) {
  if (!ready_ || index < 0 || index >= kHilNumInputs) return nullptr;
  return interpreter_->input(index)->data.uint8;
}

const uint8_t* TflmBackend::OutputBuffer(int index) {
  if (!ready_ || index < 0 || index >= kHilNumOutputs) return nullptr;
  return interpreter_->output(index)->data.uint8;
}

int32_t TflmBackend::Invoke(uint32_t* invoke_us, uint64_t* cycles) {
  if (!ready_) return kTfLiteError;
  const uint64_t c0 = board::CyclesNow();
  const uint32_t t0 = board::MicrosNow();
  const TfLiteStatus status = interpreter_->Invoke();
  const uint32_t t1 = board::MicrosNow();
  const uint64_t c1 = board::CyclesNow();
  const uint8_t options = g_profiler.options();
  if (status == kTfLiteOk && g_profiler.operators_done() == kHilNumOperators) {
    g_trace_sample = g_next_sample;
    g_trace_valid = (options & protocol::kInvokeTrace) != 0;
    g_capture_valid = (options & protocol::kInvokeCapture) != 0;
    g_capture_first = g_profiler.capture_first();
  }
  g_profiler.Disarm();   // an INVOKE without options records nothing
  *invoke_us = t1 - t0;  // wraps correctly
  *cycles = board::HasCycleCounter() ? c1 - c0 : 0;
  FlushLine(protocol::kLogWarn);
  return static_cast<int32_t>(status);
}

}  // namespace runner
}  // namespace hil

// ---------------------------------------------------------------- TFLM seam
// TFLM prints only through these two (micro_log.cc). Text becomes LOG frames
// at level warn: TFLM reports problems (missing ops, allocation failures).
extern "C" void DebugLog(const char* format, va_list args) {
  hil::runner::AppendLog(hil::protocol::kLogWarn, format, args);
}

extern "C" int DebugVsnprintf(char* buffer, size_t buf_size, const char* format,
                              va_list vlist) {
  return hil::FormatV(buffer, buf_size, format, vlist);
}

// TFLM's time seam (micro_time.h), used by its MicroProfiler: the board's
// cycle counter where it has one, else its microsecond clock.
namespace tflite {
uint32_t ticks_per_second() {
  return hil::board::HasCycleCounter() ? hil::board::CpuHz() : 1000000u;
}
uint32_t GetCurrentTimeTicks() {
  return hil::board::HasCycleCounter()
             ? static_cast<uint32_t>(hil::board::CyclesNow())
             : hil::board::MicrosNow();
}
}  // namespace tflite
