// Collectives on device tensors (CUDA) through host memory (docs/architecture.md, "Device
// tensors"). When a collective is called, its inputs are copied into page-locked host tensors on
// the caller's current stream, so they are read in that stream's order; the collective runs on
// the host copies; its outputs are copied back on the same stream, and the work completes only
// once those copies have finished. A group can also stage CPU tensors this way (plain host
// copies, no stream), which is how the tests drive this path on machines without a GPU.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace zcoll {

class DeviceStaging {
 public:
  // For the tensors of one call: nullptr when they are plain CPU tensors (the usual case) and
  // `stageCpu` is off. Every tensor must be on the same device.
  static std::shared_ptr<DeviceStaging> forTensors(const std::vector<at::Tensor>& tensors, bool stageCpu,
                                                   const char* op);

  explicit DeviceStaging(c10::Device device);

  // The host tensor the collective uses in place of `t` (contiguous, same shape and dtype):
  // with `read`, t is copied into it now, in the stream's order; with `write`, it is copied
  // back into t after the collective. Undefined in, undefined out.
  at::Tensor host(const at::Tensor& t, bool read, bool write);
  std::vector<at::Tensor> host(const std::vector<at::Tensor>& ts, bool read, bool write);
  // A call that reads `ins` and writes `outs`: each tensor replaced by its host copy.
  void replaceWithHostCopies(std::vector<at::Tensor>& ins, std::vector<at::Tensor>& outs);

  // The caller's thread, after the last host(): marks where the inputs' copies end.
  void inputsQueued();
  // The thread that runs the collective: before it, wait for the inputs' copies; after it,
  // copy the outputs back on the caller's stream and wait for them.
  void beforeRun();
  void afterRun();

  c10::Device device() const { return device_; }
  // The caller's current stream (none for staged CPU tensors).
  const std::optional<c10::Stream>& stream() const { return stream_; }

 private:
  c10::Device device_;
  std::optional<c10::Stream> stream_;
  std::optional<c10::Event> inputsCopied_;
  std::vector<std::pair<at::Tensor, at::Tensor>> writeBack_;  // (the caller's tensor, its host copy)
};

// The current stream of `device` on this thread (none for the CPU).
std::optional<c10::Stream> currentStream(c10::Device device);

// The host waits for everything enqueued on `stream` so far (no-op without a stream).
void waitForStream(const std::optional<c10::Stream>& stream);

}  // namespace zcoll
