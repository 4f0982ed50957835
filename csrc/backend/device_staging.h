// Collectives on device tensors (CUDA) through host memory (docs/architecture.md, "Device
// tensors"). When a collective is called, its inputs are copied into page-locked host tensors on
// the caller's current stream, so they are read in that stream's order, and an event is recorded
// after those copies. The collective's own device work (the outputs' copies back, the codec
// kernels) runs on a stream of zcoll's (SideStreams), which first waits for that event, on the
// device; the work completes once an event recorded after that device work has completed. So the
// host never waits for the caller's stream beyond the call itself: compute the caller queues
// after the call runs concurrently with the collective and never delays its completion. A group
// can also stage CPU tensors this way (plain host copies, no streams, no events), which is how the
// tests drive this path on machines without a GPU.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <memory>
#include <mutex>
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

  // The caller's thread, after the last host() and any other work the call queues on the
  // caller's stream (a compressed collective's float32 copy): zcoll's stream for the device work
  // (none for staged CPU tensors), and the event that marks where the call's work on the
  // caller's stream ends.
  void inputsQueued(std::optional<c10::Stream> workStream);
  // The thread that runs the collective, right before it: zcoll's stream waits (on the device)
  // for that event, and the host waits for it too where the collective reads host copies. The
  // wait is enqueued now, not at call time: enqueued at call time, collective k's device work
  // would sit behind the waits of every later call already made, so behind the compute the
  // caller queued between the calls.
  void beforeRun();
  // After it: the outputs' copies back (on zcoll's stream), then the host waits for an event
  // recorded after them, which covers zcoll's own work only.
  void afterRun();
  // After a failed run: waits for whatever zcoll's stream still has of this collective, so the
  // tensors it uses may be released. Never throws.
  void drain() noexcept;

  c10::Device device() const { return device_; }
  // The caller's current stream at the call (none for staged CPU tensors).
  const std::optional<c10::Stream>& stream() const { return stream_; }
  // zcoll's stream for the device work of this collective (none for staged CPU tensors).
  const std::optional<c10::Stream>& workStream() const { return work_; }

 private:
  void waitForWork();  // the host waits for an event recorded on work_ now

  c10::Device device_;
  std::optional<c10::Stream> stream_, work_;
  std::optional<c10::Event> inputsCopied_;
  bool hostReads_ = false;  // some host() copied an input, which the host reads
  std::vector<std::pair<at::Tensor, at::Tensor>> writeBack_;  // (the caller's tensor, its host copy)
};

// zcoll's own streams, one per device, for the device work of one lane (the collectives', or
// point-to-point's): taken once from the device's pool of high-priority streams, so that
// zcoll's copies and codec kernels are scheduled ahead of the caller's compute, and kept, so a
// lane's device work stays in one order and its codec buffers stay on one stream. Pool streams
// are shared round-robin by the whole process (torch's futures' callbacks and other libraries
// take them too): at worst zcoll's work waits behind someone's queued work, never the reverse.
class SideStreams {
 public:
  // None for the CPU.
  std::optional<c10::Stream> get(c10::Device device);

 private:
  std::mutex mutex_;
  std::vector<c10::Stream> streams_;
};

// The current stream of `device` on this thread (none for the CPU).
std::optional<c10::Stream> currentStream(c10::Device device);

}  // namespace zcoll
