// tinyhil wire protocol: the device side (docs/protocol.md sections 2-4).
//
// The Dispatcher turns received bytes into requests, runs them against a
// Backend (the model: TFLM on a device, a fake in tests) and streams the
// responses to a ByteSink. It keeps the memory of recent requests that makes
// WRITE and INVOKE exactly-once under retransmission, tracks which input
// bytes were written since the last INVOKE, and sends the unsolicited BOOT
// and LOG frames. All of its state is inside the object: declare it static.
#ifndef HIL_DISPATCHER_H_
#define HIL_DISPATCHER_H_

#include <cstddef>
#include <cstdint>

#include "hil_protocol.h"

// Input tensors the dispatcher can track (a model with more is NOT_READY).
#ifndef HIL_MAX_INPUTS
#define HIL_MAX_INPUTS 4
#endif
// Disjoint written ranges remembered per input between two INVOKEs.
#ifndef HIL_INPUT_RANGES
#define HIL_INPUT_RANGES (2 * HIL_RX_WINDOW)
#endif
// Payload bytes kept per remembered response (RESULT needs 24).
#ifndef HIL_DUP_PAYLOAD
#define HIL_DUP_PAYLOAD 48
#endif
// Version 2 staging RAM, bytes: two input slots (the next sample streams
// into one while the other waits or runs) and the previous sample's outputs.
// Used when 2 x inputs + outputs fit; else the device reports no slots and
// no staged outputs, and the host streams one sample at a time.
#ifndef HIL_STAGING_BYTES
#define HIL_STAGING_BYTES 4096
#endif
// The board's UART rate for INFO.line_baud (0: unknown, e.g. USB CDC);
// a board's build flags set it (-DHIL_LINE_BAUD=115200).
#ifndef HIL_LINE_BAUD
#define HIL_LINE_BAUD 0
#endif
// Longest LOG text, bytes (longer text is cut).
#ifndef HIL_MAX_LOG
#define HIL_MAX_LOG 160
#endif

namespace hil {
namespace protocol {

constexpr int kMaxDims = 6;
constexpr int kMaxInputs = HIL_MAX_INPUTS;
constexpr int kInputRanges = HIL_INPUT_RANGES;
constexpr size_t kDupPayload = HIL_DUP_PAYLOAD;
constexpr size_t kMaxLog = HIL_MAX_LOG;
constexpr int kDupEntries = 2 * kRxWindow;
constexpr size_t kStagingBytes = HIL_STAGING_BYTES;
constexpr int kInputSlots = 2;

static_assert(kDupPayload >= 24 && kDupPayload <= 255,
              "HIL_DUP_PAYLOAD must hold a RESULT");
static_assert(kMaxLog + 1 + kMinBody <= kMaxFrame,
              "HIL_MAX_LOG does not fit a frame");

// A tensor as the handshake describes it (docs/protocol.md 3.1).
struct TensorSpec {
  uint8_t dtype;  // a Dtype (kDtypeFloat32, ...)
  uint8_t ndims;
  int32_t dims[kMaxDims];
  float scale;  // 0 when not quantized
  int32_t zero_point;
  uint32_t nbytes;
};

// The rest of INFO.
struct DeviceInfo {
  const char* firmware;         // firmware version
  const char* board;            // board id (boards/<id>.json)
  const uint8_t* model_sha256;  // 32 bytes
  uint32_t model_size;
  uint32_t arena_size;
  uint32_t arena_used;
  uint32_t cpu_hz;     // 0 when unknown
  uint16_t flags;      // kInfoCyclesReal, kInfoHostTime
  uint32_t line_baud;  // the UART's rate; 0 when unknown (USB CDC)
  // FEATURE_TRACE: operators traced (0: no trace), capture buffer bytes,
  // trace ticks per second (0: unknown).
  uint16_t trace_ops;
  uint32_t capture_bytes;
  uint32_t tick_hz;
};

// What the dispatcher needs from the model. Implemented by hil_runner's
// TFLM backend and by the tests' fake.
class Backend {
 public:
  // nullptr when the model is loaded and allocated; else why not (sent as
  // ERROR NOT_READY to every request but PING).
  virtual const char* NotReadyReason() = 0;
  virtual void GetInfo(DeviceInfo* info) = 0;
  virtual int NumInputs() = 0;
  virtual int NumOutputs() = 0;
  // index < NumInputs() (output false) or < NumOutputs() (output true).
  virtual bool GetTensorSpec(bool output, int index, TensorSpec* spec) = 0;
  // Spec().nbytes bytes each; nullptr makes the request fail with NOT_READY.
  virtual uint8_t* InputBuffer(int index) = 0;
  virtual const uint8_t* OutputBuffer(int index) = 0;
  // Runs the model once; returns TfLiteStatus (0 = ok).
  virtual int32_t Invoke(uint32_t* invoke_us, uint64_t* cycles) = 0;

  // FEATURE_TRACE (optional): what the next Invoke() records, from the
  // version-2 INVOKE's options (kInvokeTrace, kInvokeCapture) and first
  // captured operator; options 0 before every untraced invoke.
  virtual void PrepareInvoke(uint32_t /*sample_id*/, uint8_t /*options*/,
                             uint16_t /*capture_op*/) {}
  // The per-operator record `op` of the traced
  // invoke `sample_id`; false when none is held (answered ERROR STALE).
  virtual bool TraceRecord(uint32_t /*sample_id*/, uint16_t /*op*/,
                           uint16_t* /*n_ops*/, uint32_t* /*crc*/,
                           uint32_t* /*ticks*/) {
    return false;
  }
  // The capture of `sample_id`: its bytes, or nullptr when none is held.
  virtual const uint8_t* CaptureOf(uint32_t /*sample_id*/,
                                   uint16_t* /*first_op*/, uint16_t* /*n_ops*/,
                                   uint32_t* /*total*/) {
    return nullptr;
  }

 protected:
  ~Backend() = default;
};

class Dispatcher {
 public:
  Dispatcher(Backend* backend, ByteSink* sink);

  // Feeds received bytes; each complete request is answered before Feed
  // returns. Bad frames are dropped silently (the host retransmits).
  Status Feed(const uint8_t* data, size_t length);

  // Unsolicited frames (seq 0). Log() is safe to call from inside
  // Backend::Invoke (TFLM's DebugLog); a log that arrives while a response
  // is being written is counted and dropped.
  Status SendBoot(uint32_t boot_nonce);

  // The highest protocol version offered in HELLO (default and upper bound
  // kProtocolVersion): 1 makes a version-1 device (tests, old hosts).
  void SetMaxVersion(uint16_t version) {
    max_version_ = version < kProtocolVersionMin ? kProtocolVersionMin
                   : version > kProtocolVersion  ? kProtocolVersion
                                                 : version;
  }
  uint16_t version() const { return version_; }
  Status Log(LogLevel level, const char* text, size_t length);

  struct Counters {
    uint32_t requests;
    uint32_t duplicates;  // answered from memory / repeated
    uint32_t errors;      // ERROR responses
    uint32_t logs_dropped;
    uint32_t naks;
    uint32_t mismatches;  // INVOKEs refused: input CRC
  };
  const Counters& counters() const { return counters_; }
  const FrameReceiver::Counters& link_counters() const {
    return receiver_.counters();
  }

 private:
  struct Range {
    uint32_t begin;
    uint32_t end;
  };
  struct Coverage {  // input bytes written since the last INVOKE
    Range ranges[kInputRanges];
    uint8_t count;
  };
  struct Remembered {
    bool used;
    bool stored;  // false: the request has no side effect and is run again
    uint8_t request_type;
    uint8_t response_type;
    uint16_t seq;
    uint8_t length;
    uint8_t payload[kDupPayload];
  };

  void Handle(const FrameView& request);
  void Execute(const FrameView& request);
  void HandleHello(const FrameView& request);
  void HandleWrite(const FrameView& request);
  void HandleInvoke(const FrameView& request);
  void HandleRead(const FrameView& request);
  void HandleTraceRead(const FrameView& request);
  void HandleCaptureRead(const FrameView& request);
  void SendError(uint16_t seq, uint16_t code, const char* message);
  void SendEmpty(uint8_t type, uint16_t seq);
  // NOT_READY when the backend is not ready (and answers); else false.
  bool RefuseNotReady(uint16_t seq);
  Remembered* Find(uint16_t seq);
  void ClearInputs();
  void Cover(Coverage* set, int input, uint32_t begin, uint32_t end);
  bool Complete(const Coverage* set, int input, uint32_t nbytes) const;
  // Version 2.
  void ComputeLayout();
  uint8_t* SlotInput(int slot, int input);
  uint8_t* StagedOutput(int output);
  bool InputCrcMatches(int slot, uint32_t want);
  void SendNak(uint16_t first, uint16_t count, uint16_t reason);
  void Track(const FrameView& request);

  Backend* backend_;
  FrameWriter writer_;
  uint8_t rx_[kMaxFrame];
  FrameReceiver receiver_;
  Coverage coverage_[kMaxInputs];
  Remembered memory_[kDupEntries];
  int next_memory_ = 0;
  bool hello_seen_ = false;
  uint16_t hello_seq_ = 0;
  uint32_t hello_nonce_ = 0;
  uint8_t response_type_ = 0;  // of the response being written
  Counters counters_{};
  // Version 2 state.
  uint16_t max_version_ = kProtocolVersion;
  uint16_t version_ = 1;
  bool expect_valid_ = false;
  uint16_t expect_ = 0;  // the seq the next new request should carry
  alignas(8) uint8_t staging_[kStagingBytes];
  bool layout_done_ = false;
  int slots_ = 0;              // input slots in staging_ (0 or kInputSlots)
  uint32_t input_total_ = 0;   // bytes of all inputs
  uint32_t output_total_ = 0;  // bytes of all outputs
  bool staged_outputs_ = false;
  Coverage slot_coverage_[kInputSlots][kMaxInputs];
  bool outputs_valid_ = false;  // the tensors hold the outputs of live_sample_
  uint32_t live_sample_ = 0;
  bool staged_valid_ = false;  // staging_ holds the outputs of staged_sample_
  uint32_t staged_sample_ = 0;
};

}  // namespace protocol
}  // namespace hil

#endif  // HIL_DISPATCHER_H_
