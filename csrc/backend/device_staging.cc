#include "backend/device_staging.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>

#include "backend/errors.h"

// Memory and streams (torch's caching allocators), reasoned once for this file and
// backend/collectives.cc:
// - The caller's tensors are read (input copies, a compressed collective's float32 copy) on the
//   caller's current stream at call time, as any torch op called there would read them: the usual
//   torch rule applies (a tensor freed right after the call is safe on its allocation stream;
//   the caller owns record_stream when the current stream is another).
// - Everything used on zcoll's stream — the caller's output tensors (copies back), the float32
//   copies and gather buffers made at call time on the caller's stream, the residuals — is held
//   by the collective's work (its outputs, its body's captures, writeBack_) until the work is
//   released, and a work is released only after the host has seen the completion event recorded
//   after zcoll's last use of them (afterRun; drain() on errors). So no block can return to the
//   allocator while zcoll's stream still uses it, and record_stream is not needed; it would also
//   delay the reuse of the caller's memory by whatever zcoll's stream queues later.
// - The codec device's scratch (backend/cuda_codec_device.cc) is allocated on zcoll's stream and
//   only used there.
// - Page-locked host copies: the host allocator records an event for every non-blocking copy
//   from or to them, and they too live until the work is released.
namespace zcoll {

std::optional<c10::Stream> currentStream(c10::Device device) {
  if (device.is_cpu()) return std::nullopt;
  return c10::impl::VirtualGuardImpl(device.type()).getStream(device);
}

std::optional<c10::Stream> SideStreams::get(c10::Device device) {
  if (device.is_cpu()) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find_if(streams_.begin(), streams_.end(), [&](const c10::Stream& s) { return s.device() == device; });
  if (it != streams_.end()) return *it;
  // DeviceGuardImplInterface::getStreamFromGlobalPool: in every torch release zcoll may be built
  // against (c10::ivalue::Future's callbacks and ProcessGroupGloo's CUDA work use it too).
  streams_.push_back(c10::impl::VirtualGuardImpl(device.type()).getStreamFromGlobalPool(device, /*isHighPriority=*/true));
  return streams_.back();
}

std::shared_ptr<DeviceStaging> DeviceStaging::forTensors(const std::vector<at::Tensor>& tensors, bool stageCpu,
                                                         const char* op) {
  std::optional<c10::Device> device;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    ZCOLL_CHECK_ARG(!device || *device == t.device(), "zcoll ", op, ": tensors on ", *device, " and ", t.device(),
                    " in one call (all of a call's tensors must be on one device)");
    device = t.device();
  }
  if (!device || (device->is_cpu() && !stageCpu)) return nullptr;
  return std::make_shared<DeviceStaging>(*device);
}

DeviceStaging::DeviceStaging(c10::Device device) : device_(device), stream_(currentStream(device)) {}

at::Tensor DeviceStaging::host(const at::Tensor& t, bool read, bool write) {
  if (!t.defined()) return t;
  // Page-locked for a device, so the copies are asynchronous DMA on the stream.
  at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(!device_.is_cpu()));
  if (read) {
    c10::OptionalStreamGuard guard(stream_);
    h.copy_(t, /*non_blocking=*/true);
    hostReads_ = true;
  }
  if (write) writeBack_.emplace_back(t, h);
  return h;
}

std::vector<at::Tensor> DeviceStaging::host(const std::vector<at::Tensor>& ts, bool read, bool write) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(host(t, read, write));
  return out;
}

void DeviceStaging::replaceWithHostCopies(std::vector<at::Tensor>& ins, std::vector<at::Tensor>& outs) {
  ins = host(ins, true, false);
  outs = host(outs, false, true);
}

void DeviceStaging::inputsQueued(std::optional<c10::Stream> workStream) {
  work_ = workStream;
  if (!stream_) return;
  inputsCopied_.emplace(stream_->device_type());
  inputsCopied_->record(*stream_);
}

void DeviceStaging::beforeRun() {
  if (!inputsCopied_) return;  // staged CPU tensors: nothing was queued anywhere
  // Ordered after the caller's work up to the call: the outputs' copies back must not overtake
  // the caller's earlier reads or writes of the outputs, nor the kernels the float32 copies.
  if (work_) inputsCopied_->block(*work_);
  if (hostReads_) inputsCopied_->synchronize();  // the host collective reads the host copies
}

void DeviceStaging::afterRun() {
  {
    c10::OptionalStreamGuard guard(work_);
    for (auto& [callers, hostCopy] : writeBack_) callers.copy_(hostCopy, /*non_blocking=*/true);
  }
  waitForWork();  // the host copies may be freed, and the work completed, after this
}

void DeviceStaging::waitForWork() {
  if (!work_) return;
  c10::Event done(work_->device_type());
  done.record(*work_);
  done.synchronize();
}

void DeviceStaging::drain() noexcept {
  try {
    waitForWork();
  } catch (...) {  // the device itself failed: nothing left to wait for
  }
}

}  // namespace zcoll
