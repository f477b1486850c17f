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
#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
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

HilOpResolver g_resolver;
alignas(tflite::MicroInterpreter) uint8_t
    g_interpreter_storage[sizeof(tflite::MicroInterpreter)];

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
  interpreter_ = new (g_interpreter_storage)
      tflite::MicroInterpreter(model, g_resolver, g_arena, kArenaSize);
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
  info->firmware = HIL_FIRMWARE_VERSION;
  info->board = board::BoardId();
  info->model_sha256 = kHilModelSha256;
  info->model_size = kHilModelSize;
  info->arena_size = static_cast<uint32_t>(kArenaSize);
  info->arena_used = static_cast<uint32_t>(arena_used());
  info->cpu_hz = board::CpuHz();
  info->flags = board::HasCycleCounter() ? protocol::kInfoCyclesReal : 0;
  info->line_baud = HIL_LINE_BAUD;
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
