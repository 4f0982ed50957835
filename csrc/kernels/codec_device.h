// Where the staged compressed collectives (algorithms/staged_compressed.h) run their codec work:
// a device with its own memory, reached from the host by copies. The CUDA implementation
// (backend/cuda_codec_device.cc) launches the kernels of kernels/common/codec_grid.h on one
// stream; EmulatedCodecDevice (kernels/cpu/emulated_codec_device.h) runs the same kernel bodies
// on the host, so the tests prove the staged schedules on machines without a GPU.
//
// Stream discipline: every call is enqueued, in call order, on one stream; nothing runs until
// the host reads results, and the host reads a host buffer filled by copyToHost only after
// synchronize().
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/codec_grid.h"
#include "kernels/common/codec_math.h"

namespace zcoll::kernels {

class CodecDevice {
 public:
  virtual ~CodecDevice() = default;

  // Device memory (`slot` 0..3, at least `bytes`, kept for later calls): contents are undefined
  // on return, and the pointer stays valid until the same slot is asked for again.
  virtual uint8_t* deviceBuffer(int slot, size_t bytes) = 0;
  // Host memory the device copies to and from (page-locked where that matters), same rules.
  virtual uint8_t* hostBuffer(int slot, size_t bytes) = 0;

  // The kernels: encode/decode as kernels::cpu::encode/decode; decodeSum and addResidual as
  // decodeSumBody and addResidualBody. Pointers are device pointers.
  virtual void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
                      float residualScale) = 0;
  virtual void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out) = 0;
  virtual void decodeSum(const DecodeSumArgs& a) = 0;
  virtual void addResidual(float* x, float* residual, size_t n) = 0;

  virtual void copyToHost(void* host, const void* device, size_t bytes) = 0;
  virtual void copyToDevice(void* device, const void* host, size_t bytes) = 0;
  // The host waits until everything enqueued so far has finished.
  virtual void synchronize() = 0;
};

}  // namespace zcoll::kernels
