// A CodecDevice in host memory that runs the CUDA kernel bodies through the grid emulator
// (every block and thread of the CUDA launch shape): the tests run the staged compressed
// schedules, and the backend's device path, on it.
#pragma once

#include <vector>

#include "kernels/codec_device.h"

namespace zcoll::kernels::cpu {

class EmulatedCodecDevice final : public CodecDevice {
 public:
  uint8_t* deviceBuffer(int slot, size_t bytes) override;
  uint8_t* hostBuffer(int slot, size_t bytes) override;
  void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
              float residualScale) override;
  void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out) override;
  void decodeSum(const DecodeSumArgs& a) override;
  void addResidual(float* x, float* residual, size_t n) override;
  void copyToHost(void* host, const void* device, size_t bytes) override;
  void copyToDevice(void* device, const void* host, size_t bytes) override;
  void synchronize() override {}  // every call above has finished when it returns

 private:
  std::vector<uint8_t> device_[4], host_[4];
};

}  // namespace zcoll::kernels::cpu
