#include "transport/router.h"

#include <sched.h>

#include <array>
#include <thread>
#include <unordered_set>

#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/ucx/ucx_transport.h"

namespace zcoll {
namespace {

// Request ids carry their transport in the low bit.
constexpr int kLocal = 0, kNet = 1;

// The network transport options.net names, to every peer options.remoteOnly leaves it.
std::unique_ptr<Transport> makeNetTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options) {
  if (options.net == "ucx") return makeUcxTransport(store, prefix, rank, size, options);
  ZCOLL_CHECK(options.net == "tcp", "unknown network transport '", options.net, "' (ZCOLL_NET takes tcp or ucx)");
  return makeTcpTransport(store, prefix, rank, size, options);
}

class Router : public Transport {
 public:
  Router(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& options)
      : rank_(rank), size_(size), name_("shm+" + options.net), topology_(size, options.hostOf, options.hostNames),
        localIndex_(size, -1) {
    const std::vector<int>& local = topology_.ranksOn(topology_.hostOf(rank));
    for (size_t i = 0; i < local.size(); ++i) localIndex_[local[i]] = static_cast<int>(i);
    // Every rank builds its host's shm transport, then the network one: the same order everywhere.
    if (local.size() > 1) {
      TransportOptions shm = options;
      shm.groupRanks = local;
      subs_[kLocal] = makeShmTransport(store, prefix + "/host" + std::to_string(topology_.hostOf(rank)),
                                       localIndex_[rank], static_cast<int>(local.size()), shm);
    }
    TransportOptions net = options;
    net.remoteOnly = true;
    subs_[kNet] = makeNetTransport(store, prefix, rank, size, net);
  }

  // "shm+tcp" or "shm+ucx": the same on every rank (the tuner and the logs use it), also on a
  // host of one rank.
  const char* name() const override { return name_.c_str(); }
  SharedMemoryUse sharedMemory() const override {
    return subs_[kLocal] ? subs_[kLocal]->sharedMemory() : SharedMemoryUse{};
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) override {
    const auto [which, to] = route(peer);
    return record(which, subs_[which]->isend(to, tag, data, bytes));
  }
  RequestId isendOperand(int peer, uint64_t tag, const void* data, size_t bytes) override {
    const auto [which, to] = route(peer);
    return record(which, subs_[which]->isendOperand(to, tag, data, bytes));
  }
  RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) override {
    const auto [which, from] = route(peer);
    return record(which, subs_[which]->irecv(from, tag, data, bytes));
  }
  RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) override {
    const auto [which, from] = route(peer);
    return record(which, subs_[which]->irecvConsume(from, tag, bytes, std::move(consume)));
  }

  // While only one transport has requests outstanding, its own wait() sleeps efficiently (futex,
  // poll). While both have, they progress in turns (a ring step may send over tcp and receive
  // over shm, and either may need the other to move first), backing off from spinning to naps.
  void wait(RequestId req, Deadline deadline) override {
    const int which = static_cast<int>(req & 1), other = 1 - which;
    const RequestId id = req >> 1;
    for (unsigned idle = 0;; ++idle) {
      if (!progressed(other)) {
        subs_[which]->wait(id, deadline);
        outstanding_[which].erase(id);
        return;
      }
      if (subs_[which]->test(id)) {
        outstanding_[which].erase(id);
        return;
      }
      if (Clock::now() >= deadline) subs_[which]->wait(id, deadline);  // throws its timeout, naming the peer
      if (idle < 64) continue;
      if (idle < 1024) sched_yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  bool test(RequestId req) override {
    const int which = static_cast<int>(req & 1);
    const RequestId id = req >> 1;
    progressed(1 - which);
    if (!subs_[which]->test(id)) return false;
    outstanding_[which].erase(id);
    return true;
  }

  void abort(const std::string& why) override {
    for (auto& t : subs_)
      if (t) t->abort(why);
  }

  // The two transports, for schedules that drive each from a thread of its own. While they do,
  // the router itself must not be used.
  PerPeer split() { return {subs_[kLocal].get(), subs_[kNet].get()}; }

 private:
  // The transport for `peer` and the peer's rank there (shm numbers one host's ranks from 0).
  std::pair<int, int> route(int peer) const {
    ZCOLL_CHECK(peer >= 0 && peer < size_, "rank ", rank_, ": peer ", peer, " is not in a group of ", size_);
    if (subs_[kLocal] && localIndex_[peer] >= 0) return {kLocal, localIndex_[peer]};
    return {kNet, peer};
  }

  RequestId record(int which, RequestId id) {
    outstanding_[which].insert(id);
    return id << 1 | static_cast<RequestId>(which);
  }

  // One progress pass over transport `which` if it has requests outstanding; false when it has
  // none (left).
  bool progressed(int which) {
    auto& ids = outstanding_[which];
    while (!ids.empty()) {
      const RequestId id = *ids.begin();
      if (!subs_[which]->test(id)) return true;  // a full pass happened; something still moves
      ids.erase(id);
    }
    return false;
  }

  const int rank_, size_;
  const std::string name_;
  const Topology topology_;
  std::vector<int> localIndex_;  // group rank -> index among this host's ranks (-1: elsewhere)
  std::array<std::unique_ptr<Transport>, 2> subs_;
  // Requests posted and not yet seen complete by wait()/test(), per transport.
  std::array<std::unordered_set<RequestId>, 2> outstanding_;
};

}  // namespace

PerPeer perPeer(Transport& t) {
  auto* router = dynamic_cast<Router*>(&t);
  return router ? router->split() : PerPeer{};
}

std::unique_ptr<Transport> makeAutoTransport(Store& store, const std::string& prefix, int rank, int size,
                                             const TransportOptions& options) {
  const Topology topology(size, options.hostOf, options.hostNames);
  if (topology.hosts() == 1) return makeShmTransport(store, prefix, rank, size, options);
  if (!topology.twoLevel()) return makeNetTransport(store, prefix, rank, size, options);
  return std::make_unique<Router>(store, prefix, rank, size, options);
}

}  // namespace zcoll
