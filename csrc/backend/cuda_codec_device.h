// The CodecDevice of a CUDA stream: zcoll's CUDA kernels (kernels/cuda) enqueued on that stream,
// device memory from torch's caching allocator, host memory page-locked by torch's host
// allocator. The stream is zcoll's own (backend/device_staging.h, SideStreams), never the
// caller's: synchronize() then waits for zcoll's work only, not for compute the caller queued
// after the collective. Only built with CUDA; elsewhere making one throws.
#pragma once

#include <c10/core/Stream.h>

#include <memory>

#include "kernels/codec_device.h"

namespace zcoll {

std::unique_ptr<kernels::CodecDevice> makeCudaCodecDevice(const c10::Stream& stream);

}  // namespace zcoll
