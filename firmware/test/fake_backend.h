// A model-free Backend for the dispatcher's host tests and fuzz target.
//
// Its behaviour is specified here and mirrored by tests/test_firmware_codec.py
// (FakeModel), which computes the responses it expects with the Python codec:
//   inputs  0: float32 [1,4]   (16 bytes)
//           1: int8    [1,2,3] (6 bytes), scale 0.5, zero point -3
//   outputs 0: int8    [1,5]   (5 bytes), scale 0.25, zero point 1
//           1: int32   [300]   (1200 bytes: more than one DATA frame)
//   Invoke: s = sum of all input bytes (mod 2^32);
//           out0[k] = (s + k) & 0xFF; out1[j] = s + 7*j (little-endian)
//           invoke_us = 1000 + n, cycles = 2^32 + n (n = invokes so far, from
//           0) input 1 byte 0 == 0x7F -> returns 1 (a failing interpreter)
#ifndef HIL_TEST_FAKE_BACKEND_H_
#define HIL_TEST_FAKE_BACKEND_H_

#include <cstring>

#include "hil_dispatcher.h"

namespace hil {
namespace test {

class FakeBackend : public protocol::Backend {
 public:
  const char* not_ready = nullptr;

  const char* NotReadyReason() override { return not_ready; }

  void GetInfo(protocol::DeviceInfo* info) override {
    static uint8_t sha[32];
    for (int i = 0; i < 32; ++i) sha[i] = static_cast<uint8_t>(i);
    info->firmware = "fake-fw 1.0";
    info->board = "fake";
    info->model_sha256 = sha;
    info->model_size = 4321;
    info->arena_size = 8192;
    info->arena_used = 5000;
    info->cpu_hz = 64000000;
    info->flags = protocol::kInfoCyclesReal;
    info->line_baud = 115200;
  }

  int NumInputs() override { return 2; }
  int NumOutputs() override { return 2; }

  bool GetTensorSpec(bool output, int index,
                     protocol::TensorSpec* spec) override {
    *spec = protocol::TensorSpec{};
    if (!output && index == 0) {
      *spec = {1, 2, {1, 4}, 0.0f, 0, 16};
    } else if (!output && index == 1) {
      *spec = {2, 3, {1, 2, 3}, 0.5f, -3, 6};
    } else if (output && index == 0) {
      *spec = {2, 2, {1, 5}, 0.25f, 1, 5};
    } else if (output && index == 1) {
      *spec = {5, 1, {300}, 0.0f, 0, 1200};
    } else {
      return false;
    }
    return true;
  }

  uint8_t* InputBuffer(int index) override {
    return index == 0 ? in0_ : index == 1 ? in1_ : nullptr;
  }
  const uint8_t* OutputBuffer(int index) override {
    return index == 0 ? out0_ : index == 1 ? out1_ : nullptr;
  }

  int32_t Invoke(uint32_t* invoke_us, uint64_t* cycles) override {
    const uint32_t n = invokes_++;
    *invoke_us = 1000 + n;
    *cycles = (1ull << 32) + n;
    if (in1_[0] == 0x7F) return 1;
    uint32_t s = 0;
    for (uint8_t b : in0_) s += b;
    for (uint8_t b : in1_) s += b;
    for (int k = 0; k < 5; ++k) out0_[k] = static_cast<uint8_t>(s + k);
    for (int j = 0; j < 300; ++j) protocol::StoreU32(out1_ + 4 * j, s + 7u * j);
    return 0;
  }

 private:
  uint8_t in0_[16] = {};
  uint8_t in1_[6] = {};
  uint8_t out0_[5] = {};
  uint8_t out1_[1200] = {};
  uint32_t invokes_ = 0;
};

}  // namespace test
}  // namespace hil

#endif  // HIL_TEST_FAKE_BACKEND_H_
