#include "backend/device_staging.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "backend/errors.h"

namespace zcoll {

std::optional<c10::Stream> currentStream(c10::Device device) {
  if (device.is_cpu()) return std::nullopt;
  return c10::impl::VirtualGuardImpl(device.type()).getStream(device);
}

void waitForStream(const std::optional<c10::Stream>& stream) {
  if (!stream) return;
  c10::Event done(stream->device_type());
  done.record(*stream);
  done.synchronize();
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

void DeviceStaging::inputsQueued() {
  if (!stream_) return;
  inputsCopied_.emplace(stream_->device_type());
  inputsCopied_->record(*stream_);
}

void DeviceStaging::beforeRun() {
  if (inputsCopied_) inputsCopied_->synchronize();
}

void DeviceStaging::afterRun() {
  {
    c10::OptionalStreamGuard guard(stream_);
    for (auto& [callers, hostCopy] : writeBack_) callers.copy_(hostCopy, /*non_blocking=*/true);
  }
  waitForStream(stream_);  // the host copies may be freed, and the work completed, after this
}

}  // namespace zcoll
