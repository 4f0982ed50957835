#include "kernels/cpu/emulated_codec_device.h"

#include <cstring>

#include "kernels/cpu/cuda_grid_emulator.h"
#include "util/error.h"

namespace zcoll::kernels::cpu {
namespace {

uint8_t* slotOf(std::vector<uint8_t>* slots, int slot, size_t bytes) {
  ZCOLL_CHECK(slot >= 0 && slot < 4, "codec device buffer slot ", slot, " is not 0..3");
  if (slots[slot].size() < bytes) slots[slot].resize(bytes);
  return slots[slot].data();
}

// Every thread of a one-element-per-thread launch, as the CUDA launcher shapes it.
template <typename Body>
void launchElementwise(size_t n, Body body) {
  const unsigned nt = kCodecThreadsPerBlock;
  for (size_t b = 0; b < (n + nt - 1) / nt; ++b)
    for (unsigned t = 0; t < nt; ++t) body(b, t, nt);
}

}  // namespace

uint8_t* EmulatedCodecDevice::deviceBuffer(int slot, size_t bytes) { return slotOf(device_, slot, bytes); }
uint8_t* EmulatedCodecDevice::hostBuffer(int slot, size_t bytes) { return slotOf(host_, slot, bytes); }

void EmulatedCodecDevice::encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
                                 float residualScale) {
  emulateCudaEncode(p, x, n, out, residual, residualScale, kCodecThreadsPerBlock);
}

void EmulatedCodecDevice::decode(Codec codec, int block, const uint8_t* in, size_t n, float* out) {
  emulateCudaDecode(codec, block, in, n, out, kCodecThreadsPerBlock);
}

void EmulatedCodecDevice::decodeSum(const DecodeSumArgs& a) {
  launchElementwise(a.n, [&](size_t b, unsigned t, unsigned nt) { decodeSumBody(b, t, nt, a); });
}

void EmulatedCodecDevice::addResidual(float* x, float* residual, size_t n) {
  launchElementwise(n, [&](size_t b, unsigned t, unsigned nt) { addResidualBody(b, t, nt, x, residual, n); });
}

void EmulatedCodecDevice::copyToHost(void* host, const void* device, size_t bytes) {
  if (bytes) std::memcpy(host, device, bytes);
}

void EmulatedCodecDevice::copyToDevice(void* device, const void* host, size_t bytes) {
  if (bytes) std::memcpy(device, host, bytes);
}

}  // namespace zcoll::kernels::cpu
