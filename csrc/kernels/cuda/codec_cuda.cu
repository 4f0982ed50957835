#include "kernels/cuda/codec_cuda.h"

#include <cuda_runtime.h>

#include "kernels/common/codec_check.h"
#include "kernels/common/codec_grid.h"
#include "util/error.h"

#define ZCOLL_CUDA_CHECK(call)                                                          \
  do {                                                                                  \
    const cudaError_t err_ = (call);                                                    \
    ZCOLL_CHECK(err_ == cudaSuccess, "CUDA error in ", #call, ": ", cudaGetErrorString(err_)); \
  } while (0)

namespace zcoll::kernels::cuda {
namespace {

__global__ void absmaxKernel(EncodeArgs a, BlockScratch* s) { absmaxBody(blockIdx.x, threadIdx.x, blockDim.x, a, s[blockIdx.x]); }
__global__ void encodeKernel(EncodeArgs a, const BlockScratch* s) { encodeBody(blockIdx.x, threadIdx.x, blockDim.x, a, s ? s[blockIdx.x] : BlockScratch{0, 0}); }
__global__ void decodeKernel(DecodeArgs a) { decodeBody(blockIdx.x, threadIdx.x, blockDim.x, a); }
__global__ void decodeSumKernel(DecodeSumArgs a) { decodeSumBody(blockIdx.x, threadIdx.x, blockDim.x, a); }
__global__ void addResidualKernel(float* x, float* residual, size_t n) {
  addResidualBody(blockIdx.x, threadIdx.x, blockDim.x, x, residual, n);
}

// One thread per element.
unsigned elementGrid(size_t n) {
  const size_t blocks = (n + kCodecThreadsPerBlock - 1) / kCodecThreadsPerBlock;
  ZCOLL_CHECK(blocks <= 0x7FFFFFFFu, "tensor of ", n, " elements needs more CUDA blocks than a grid holds");
  return static_cast<unsigned>(blocks);
}

unsigned gridFor(Codec codec, size_t n, int block) {
  const size_t blocks = gridBlocks(codec, n, block, kCodecThreadsPerBlock);
  ZCOLL_CHECK(blocks <= 0x7FFFFFFFu, "tensor of ", n, " elements needs more CUDA blocks than a grid holds");
  return static_cast<unsigned>(blocks);
}

}  // namespace

size_t encodeScratchBytes(Codec codec, size_t n, int block) {
  return isBlockwise(codec) ? gridBlocks(codec, n, block, kCodecThreadsPerBlock) * sizeof(BlockScratch) : 0;
}

void encode(const CodecParams& p, const float* x, size_t n, uint8_t* out, float* residual,
            float residualScale, void* scratch, void* stream) {
  checkCodecBlock(p.codec, p.block);
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const EncodeArgs a{p.codec, p.block, p.key, p.base, x, n, out, residual, residualScale};
  const unsigned grid = gridFor(p.codec, n, p.block);
  auto* blockScratch = static_cast<BlockScratch*>(scratch);
  if (isBlockwise(p.codec)) {
    ZCOLL_CHECK(blockScratch != nullptr, "blockwise CUDA encode needs encodeScratchBytes() of scratch");
    ZCOLL_CUDA_CHECK(cudaMemsetAsync(blockScratch, 0, encodeScratchBytes(p.codec, n, p.block), s));
    absmaxKernel<<<grid, kCodecThreadsPerBlock, 0, s>>>(a, blockScratch);
    ZCOLL_CUDA_CHECK(cudaGetLastError());
  } else {
    blockScratch = nullptr;
  }
  encodeKernel<<<grid, kCodecThreadsPerBlock, 0, s>>>(a, blockScratch);
  ZCOLL_CUDA_CHECK(cudaGetLastError());
}

void decode(Codec codec, int block, const uint8_t* in, size_t n, float* out, void* stream) {
  checkCodecBlock(codec, block);
  if (n == 0) return;
  const DecodeArgs a{codec, block, in, n, out};
  decodeKernel<<<gridFor(codec, n, block), kCodecThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(a);
  ZCOLL_CUDA_CHECK(cudaGetLastError());
}

void decodeSum(const DecodeSumArgs& a, void* stream) {
  checkCodecBlock(a.codec, a.block);
  if (a.n == 0) return;
  decodeSumKernel<<<elementGrid(a.n), kCodecThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(a);
  ZCOLL_CUDA_CHECK(cudaGetLastError());
}

void addResidual(float* x, float* residual, size_t n, void* stream) {
  if (n == 0) return;
  addResidualKernel<<<elementGrid(n), kCodecThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(x, residual, n);
  ZCOLL_CUDA_CHECK(cudaGetLastError());
}

void copyToHost(void* host, const void* device, size_t bytes, void* stream) {
  if (bytes == 0) return;
  ZCOLL_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
}

void copyToDevice(void* device, const void* host, size_t bytes, void* stream) {
  if (bytes == 0) return;
  ZCOLL_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

void synchronize(void* stream) { ZCOLL_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream))); }

void setDevice(int index) { ZCOLL_CUDA_CHECK(cudaSetDevice(index)); }

int deviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error; no device is not a failure
    return 0;
  }
  return count;
}

}  // namespace zcoll::kernels::cuda
