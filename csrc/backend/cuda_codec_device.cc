#include "backend/cuda_codec_device.h"

#include <ATen/ATen.h>
#include <c10/core/StreamGuard.h>

#include <algorithm>

#if ZCOLL_WITH_CUDA
#include "kernels/cuda/codec_cuda.h"
#endif

namespace zcoll {

#if ZCOLL_WITH_CUDA
namespace {

namespace cuda = kernels::cuda;

class CudaCodecDevice final : public kernels::CodecDevice {
 public:
  explicit CudaCodecDevice(const c10::Stream& stream)
      : stream_(stream), handle_(stream.native_handle()), index_(stream.device_index()) {}

  uint8_t* deviceBuffer(int slot, size_t bytes) override { return buffer(device_, slot, bytes, stream_.device()); }
  uint8_t* hostBuffer(int slot, size_t bytes) override { return buffer(host_, slot, bytes, at::Device(at::kCPU)); }

  // zcoll's CUDA runtime is linked statically and keeps its own current device per thread, so
  // every call names the device first (cheap; the thread running a collective may change).
  void encode(const kernels::CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
              float residualScale) override {
    cuda::setDevice(index_);
    void* scratch = deviceBuffer(kScratchSlot, cuda::encodeScratchBytes(p.codec, n, p.block));
    cuda::encode(p, x, n, out, residual, residualScale, scratch, handle_);
  }
  void decode(kernels::Codec codec, int block, const uint8_t* in, size_t n, float* out) override {
    cuda::setDevice(index_);
    cuda::decode(codec, block, in, n, out, handle_);
  }
  void decodeSum(const kernels::DecodeSumArgs& a) override {
    cuda::setDevice(index_);
    cuda::decodeSum(a, handle_);
  }
  void addResidual(float* x, float* residual, size_t n) override {
    cuda::setDevice(index_);
    cuda::addResidual(x, residual, n, handle_);
  }
  void copyToHost(void* host, const void* device, size_t bytes) override {
    cuda::setDevice(index_);
    cuda::copyToHost(host, device, bytes, handle_);
  }
  void copyToDevice(void* device, const void* host, size_t bytes) override {
    cuda::setDevice(index_);
    cuda::copyToDevice(device, host, bytes, handle_);
  }
  void synchronize() override {
    cuda::setDevice(index_);
    cuda::synchronize(handle_);
  }

 private:
  // Slots 0..3 are the schedules'; the encode's per-block scratch has one more of its own.
  static constexpr int kScratchSlot = 4;

  uint8_t* buffer(at::Tensor* slots, int slot, size_t bytes, at::Device where) {
    TORCH_CHECK(slot >= 0 && slot <= kScratchSlot, "zcoll: codec device buffer slot ", slot, " out of range");
    at::Tensor& b = slots[slot];
    if (!b.defined() || static_cast<size_t>(b.numel()) < bytes) {
      // A buffer is only replaced between collectives' device steps: each staged collective
      // ends with the host waiting for the stream, so the old one is no longer in use on it.
      // Device memory is allocated on (associated with) the stream, the only one that uses it,
      // so freeing it needs no record_stream.
      c10::StreamGuard guard(stream_);
      b = at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))},
                    at::TensorOptions().dtype(at::kByte).device(where).pinned_memory(where.is_cpu()));
    }
    return b.data_ptr<uint8_t>();
  }

  c10::Stream stream_;
  void* handle_;  // the cudaStream_t
  int index_;
  at::Tensor device_[kScratchSlot + 1], host_[kScratchSlot + 1];
};

}  // namespace

std::unique_ptr<kernels::CodecDevice> makeCudaCodecDevice(const c10::Stream& stream) {
  TORCH_CHECK(stream.device_type() == c10::DeviceType::CUDA, "zcoll: a CUDA codec device needs a CUDA stream, got ",
              stream);
  return std::make_unique<CudaCodecDevice>(stream);
}

#else

std::unique_ptr<kernels::CodecDevice> makeCudaCodecDevice(const c10::Stream& stream) {
  TORCH_CHECK(false, "zcoll was built without CUDA (ZCOLL_CUDA=off or no nvcc), so it cannot compress tensors on ",
              stream.device());
}

#endif

}  // namespace zcoll
