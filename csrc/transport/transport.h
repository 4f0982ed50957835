// Moves bytes between the ranks of a group; knows nothing of dtypes or reductions.
//
// Between each ordered pair of ranks, messages travel in order. Every message carries a tag
// (op | seq | step, see algorithms) and its size; the receiver checks both against what it
// posted, so ranks that run different collectives fail with a clear error instead of mixing
// data. All requests progress whenever any wait() runs, so a rank can post a send to one
// neighbour and a receive from another and wait for both without deadlock (full duplex).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "util/error.h"
#include "util/log.h"

namespace zcoll {

class Liveness;  // transport/liveness.h

// A group's shared secret, which every connection's hello must carry (transport/handshake.h).
constexpr size_t kSecretBytes = 32;
using Secret = std::array<uint8_t, kSecretBytes>;

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Key-value rendezvous: the c10d store in the backend, any set/get object in tests.
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  // Blocks until `key` exists; throws on the store's own timeout.
  virtual std::vector<uint8_t> get(const std::string& key) = 0;
  // Whether `key` exists, without waiting.
  virtual bool check(const std::string& key) = 0;
};

using RequestId = uint64_t;

// Takes a received payload piece: `bytes` bytes at `src` that belong at `offset` of the message.
// Pieces come in order, cover the payload once, and never split an 8-byte-aligned word, so they
// hold whole elements of any dtype; `src` is valid only during the call.
using Consumer = std::function<void(size_t offset, const void* src, size_t bytes)>;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Queue a message of `bytes` from `data` to `peer`; `data` must stay valid until waited for.
  virtual RequestId isend(int peer, uint64_t tag, const void* data, size_t bytes) = 0;
  // isend of a reduction's operand: a message its receiver combines with data of its own as it
  // arrives (irecvConsume, or a slot reduced at once). shm keeps such messages in its rings up
  // to a larger size than others: the sender's copy into the ring then runs on its own core
  // while the receiver reduces, and the sender need not wait for the read (shm_transport.cc).
  virtual RequestId isendOperand(int peer, uint64_t tag, const void* data, size_t bytes) {
    return isend(peer, tag, data, bytes);
  }
  // Queue the receipt of the next message from `peer` into `data` (exactly `bytes`, same tag).
  virtual RequestId irecv(int peer, uint64_t tag, void* data, size_t bytes) = 0;
  // Like irecv, but hands the payload to `consume` as it arrives instead of into a buffer: shm
  // calls it on the bytes in its ring, so a schedule reduces straight out of shared memory (one
  // copy less); tcp calls it once with the whole message. It runs inside wait().
  virtual RequestId irecvConsume(int peer, uint64_t tag, size_t bytes, Consumer consume) = 0;
  // Progress every outstanding request until `req` completes (an already completed request
  // returns at once; an unknown one throws). Throws TimeoutError past the deadline, Error when a
  // peer is gone, a message does not match, or abort() was called. After a throw, other queued
  // requests still point into their callers' buffers: abort() the transport before freeing
  // them (the backend does), since a later wait() would otherwise keep moving their bytes.
  virtual void wait(RequestId req, Deadline deadline) = 0;
  // One non-blocking pass of the same progress; true when `req` is complete (an already
  // completed request: true; an unknown one throws). Throws what wait() throws, except timeouts:
  // the caller owns the clock. For engines that poll many requests (algorithms/point_to_point).
  virtual bool test(RequestId req) = 0;
  // For pollers between passes of test() that found nothing to do: returns once a peer may have
  // made progress possible (on shm: it rang this rank's doorbell, as it does after publishing
  // data, freeing ring space or reading a single-copy message) or after `upTo`, whichever comes
  // first. The default sleeps `upTo`.
  virtual void idle(std::chrono::microseconds upTo) { std::this_thread::sleep_for(upTo); }
  // Make every current and future wait() throw with `why` (group shutdown, an earlier failure).
  // The one method that may be called from any thread.
  virtual void abort(const std::string& why) = 0;

  // Shared memory this rank's inbound rings hold (zeros for transports without shm).
  struct SharedMemoryUse {
    size_t ringBytes = 0;       // each directed pair's ring
    size_t ringsAllocated = 0;  // rings into this rank allocated so far (a pair's on its first message)
    size_t bytes = 0;           // this rank's segment as allocated in /dev/shm: header and those rings
    // Single copy (shm_transport.cc): peers whose memory this rank reads large messages from
    // directly, and the messages and payload bytes received that way so far.
    size_t singleCopyPeers = 0;
    uint64_t singleCopyMessages = 0;
    uint64_t singleCopyBytes = 0;
  };
  virtual SharedMemoryUse sharedMemory() const { return {}; }
};

// The largest shm ring per directed pair (ZCOLL_SHM_RING_BYTES): 1 GiB.
constexpr size_t kMaxShmRingBytes = size_t{1} << 30;

// Messages of at least this many bytes travel by single copy on shm where the host's ranks have a
// core each, unless configured otherwise (ZCOLL_SHM_SINGLE_COPY_BYTES); measured in
// bench/figures/single_copy_2ranks.txt.
constexpr size_t kDefaultShmSingleCopyBytes = size_t{16} << 10;
// TransportOptions::shmSingleCopyBytes when not configured.
constexpr int64_t kAutoShmSingleCopyBytes = -1;

// What a transport needs besides the group; filled from zcoll.Options / ZCOLL_* by the backend
// (nothing below csrc/backend reads the environment).
struct TransportOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};  // bounds the bootstrap
  std::string socketIfname;          // tcp: ZCOLL_SOCKET_IFNAME (NCCL_SOCKET_IFNAME's syntax)
  int socketFamily = 0;              // tcp: AF_INET or AF_INET6 first (ZCOLL_SOCKET_FAMILY); 0: the store host's
  std::string storeHost;             // tcp: else advertise the local address that routes here
  // The network transport of "auto" between hosts: "tcp" or "ucx" (ZCOLL_NET).
  std::string net = "tcp";
  // ucx: where libucp is (ZCOLL_UCX_LIB, else the libucx wheel's; "": the loader's search path).
  std::string ucxLibrary;
  // tcp, ucx: how long a peer's published address may leave connections unanswered (a firewall
  // that drops them) before that is an error naming it (ZCOLL_CONNECT_TIMEOUT).
  std::chrono::milliseconds connectTimeout{std::chrono::seconds(20)};
  // shm: bytes of each directed pair's ring buffer (<= kMaxShmRingBytes); 0: sized by the group
  // (shm_transport.cc, chooseRingBytes).
  size_t shmRingBytes = 0;
  // shm: messages of at least this many bytes are read by the receiver straight from the
  // sender's buffer (process_vm_readv) where the kernel allows it, instead of passing through
  // the ring (ZCOLL_SHM_SINGLE_COPY_BYTES); 0: never; kAutoShmSingleCopyBytes:
  // kDefaultShmSingleCopyBytes unless the host's ranks outnumber its cores, then never (a send
  // would wait for its reader to be scheduled, where the ring lets the sender move on).
  int64_t shmSingleCopyBytes = kAutoShmSingleCopyBytes;
  // The host of each rank (an index into hostNames) when known (the backend's topology); empty:
  // unknown (transport tests), when every peer may be on another host.
  std::vector<int> hostOf;
  std::vector<std::string> hostNames;
  // Under the "auto" transport: tcp connects only to peers on other hosts (shm carries the
  // rest), and shm, which spans one host's ranks, names them by their group ranks.
  bool remoteOnly = false;
  std::vector<int> groupRanks;
  // Where a rank that fails while the group is being made publishes why (the backend's group
  // key; empty: <prefix>/failed), so that the others, waiting for it, fail too, at once.
  std::string failKey;
  // ZCOLL_DEBUG: INFO says what was chosen (the tcp address); warnings are always logged.
  log::Level logLevel = log::Level::kWarn;
  // The group's secret (the backend's, shared by its transports); unset: the transport draws
  // its own through the store (transport tests).
  std::optional<Secret> secret;
  // The group's peer liveness (transport/liveness.h): a transport that waits on a peer asks it
  // whether the peer is gone. Null: no liveness (a dead peer is then seen by tcp as a closed
  // connection, by shm only at the deadline).
  std::shared_ptr<Liveness> liveness;
  // Heartbeats of the liveness channels (ZCOLL_HEARTBEAT_INTERVAL / ZCOLL_HEARTBEAT_TIMEOUT): a
  // peer silent for heartbeatTimeout is declared dead (its host is gone or it is stopped).
  std::chrono::milliseconds heartbeatInterval{std::chrono::seconds(1)};
  std::chrono::milliseconds heartbeatTimeout{std::chrono::seconds(30)};
  // A CRC32C of every message's payload travels with it and is verified on receipt
  // (ZCOLL_CHECKSUM); every rank of a group must agree.
  bool checksum = false;
  // Test-only (ZCOLL_TEST_FLIP_BIT): flip a bit of the payload of this rank's n-th received
  // message that has one (counted from 0; -1: never), as if the link corrupted it.
  int64_t testFlipBitAt = -1;
  // Test-only (ZCOLL_TEST_FAULT=exit_in_shm_bootstrap): shm _exit(3)s once it has published its
  // segment, as a rank killed mid-bootstrap would.
  std::string testFault;
};

// The store waits of a bootstrap: a key another rank publishes, given up when some rank
// publishes a failure under `failKey` instead (NetworkError with its text) or at `deadline`
// (TimeoutError naming `what` the wait was for), or when the group's liveness says a peer is
// gone. `ctx` prefixes messages.
class Rendezvous {
 public:
  // With `liveness`, a peer that dies or leaves while we wait fails the wait too.
  Rendezvous(Store& store, std::string failKey, std::string ctx, const Liveness* liveness = nullptr)
      : store_(store), failKey_(std::move(failKey)), ctx_(std::move(ctx)), liveness_(liveness) {}
  std::vector<uint8_t> await(const std::string& key, Deadline deadline, const std::string& what);
  // Throws if some rank has published a failure (call it while waiting on anything else).
  void checkFailed();
  // The published failure, or "".
  std::string cause();
  // Publishes why this rank failed, unless a failure is published already (the cause).
  void fail(const std::string& why);

 private:
  Store& store_;
  const std::string failKey_, ctx_;
  const Liveness* liveness_;
  bool reported_ = false;  // the failure we throw came from another rank
};

// Transport kinds (ZCOLL_TRANSPORT): "shm" (ranks on one host), "tcp" and "ucx" (any host) and
// "auto": per peer, shm to ranks on the same host and the network transport (options.net) to the
// others (transport/router.h), by options.hostOf. `prefix` namespaces the store keys (one transport per group and creation).
std::unique_ptr<Transport> makeTransport(const std::string& kind, Store& store, const std::string& prefix,
                                         int rank, int size, const TransportOptions& options);

}  // namespace zcoll
