#include "transport/transport.h"

#include "transport/liveness.h"
#include "transport/router.h"
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/ucx/ucx_transport.h"

#include <algorithm>
#include <thread>

namespace zcoll {

std::vector<uint8_t> Rendezvous::await(const std::string& key, Deadline deadline, const std::string& what) {
  auto nap = std::chrono::milliseconds(1);
  while (!store_.check(key)) {
    checkFailed();
    if (Clock::now() >= deadline) throw TimeoutError(ctx_ + "timed out waiting for " + what);
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::milliseconds(50));
  }
  return store_.get(key);
}

void Rendezvous::checkFailed() {
  // A published cause first: a rank that fails says why before its liveness says goodbye.
  if (store_.check(failKey_)) {
    const auto why = store_.get(failKey_);
    reported_ = true;
    throw NetworkError(ctx_ + "giving up: " + std::string(why.begin(), why.end()));
  }
  if (liveness_)
    for (int p = 0; p < liveness_->size(); ++p)
      if (liveness_->gone(p)) throw NetworkError(ctx_ + "giving up: " + liveness_->whyGone(p));
}

std::string Rendezvous::cause() {
  if (!store_.check(failKey_)) return "";
  const auto why = store_.get(failKey_);
  return std::string(why.begin(), why.end());
}

void Rendezvous::fail(const std::string& why) {
  // The first failure is the cause; the ones it set off elsewhere only report it.
  if (!reported_ && !store_.check(failKey_)) store_.set(failKey_, std::vector<uint8_t>(why.begin(), why.end()));
}

std::unique_ptr<Transport> makeTransport(const std::string& kind, Store& store, const std::string& prefix,
                                         int rank, int size, const TransportOptions& options) {
  ZCOLL_CHECK(size >= 1 && rank >= 0 && rank < size, "rank ", rank, " is not in a group of ", size);
  if (kind == "shm") return makeShmTransport(store, prefix, rank, size, options);
  if (kind == "tcp") return makeTcpTransport(store, prefix, rank, size, options);
  if (kind == "ucx") return makeUcxTransport(store, prefix, rank, size, options);
  if (kind == "auto") return makeAutoTransport(store, prefix, rank, size, options);
  ZCOLL_CHECK(false, "unknown transport '", kind, "' (ZCOLL_TRANSPORT takes auto, shm, tcp or ucx)");
  return nullptr;
}

}  // namespace zcoll
