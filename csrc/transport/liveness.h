// Peer liveness for a group (docs/failures.md): a channel to every peer, watched by a thread of
// its own, that tells a dead peer from a slow one without pids or timeouts.
//
// A process's sockets close when it exits, however it exits and before its parent reaps it (a
// zombie), in any PID namespace: the kernel then reports the closure to the other end at once.
// So every pair of ranks holds one connection: a unix-domain socket (bound in /dev/shm, which
// ranks that share memory share) between ranks on one host, a tcp connection between hosts.
// Closure without a goodbye means the peer died. Heartbeats every interval cover what closure
// cannot show: a host that vanished or a link cut (no FIN ever comes) and a stopped process;
// a peer silent for the heartbeat timeout is declared dead too. Forked children (DataLoader
// workers) close their copies of the channels at once, so they do not keep a dead parent's
// connections open.
//
// Transports ask gone(peer) while they wait on a peer; the group drains what the peer wrote
// before it went (its last messages are valid) and fails only what it still expects of it.
//
// Heartbeats carry where the rank is (the collective it last entered, and whether it finished),
// and survey() asks every peer the same on demand: when a collective times out, each rank's
// error names the ranks that are behind or not answering (hang forensics), not its neighbour.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/tcp/socket.h"
#include "transport/transport.h"

namespace zcoll {

class Liveness {
 public:
  // Connects to every peer through the store under `prefix` (a unix socket to the peers with
  // local[p], tcp to the others) and starts watching. Throws like a transport bootstrap.
  Liveness(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& options,
           std::vector<bool> local);
  // Says goodbye (leave()) if it has not, and stops the thread.
  ~Liveness();
  Liveness(const Liveness&) = delete;
  Liveness& operator=(const Liveness&) = delete;

  // An orderly departure (the group is destroyed): peers are told, and treat the closure that
  // follows as this rank leaving rather than dying. Idempotent.
  void leave();

  // Whether group rank `peer` has died or left; lock-free (transports call it while waiting).
  bool gone(int peer) const { return status_[static_cast<size_t>(peer)].load(std::memory_order_acquire) != kAlive; }
  // Why: "rank 2 (host b) died: its liveness connection closed (the process exited or was killed)".
  std::string whyGone(int peer) const;
  int size() const { return size_; }
  // "rank 2 (host b)", or "rank 2" where hosts are unknown.
  std::string who(int peer) const;

  // This rank entered collective #seq (`what`: "ALLREDUCE"), and finished it (or failed in it):
  // what heartbeats and survey answers report.
  void entered(uint64_t seq, const std::string& what);
  void finished(uint64_t seq, bool failed = false);
  // This rank gives up on the group (an error that breaks it): tells every peer why before the
  // transports hang up, so a peer that then sees only a closed connection can say what happened.
  void gaveUp(const std::string& why);
  // Why `peer` gave up, waiting up to `within` for its notice (it travels beside the closure a
  // transport has just seen); "" if none came (it may have died: see gone()).
  std::string whyGaveUp(int peer, std::chrono::milliseconds within);
  // Asks every live peer where it is, waits up to `within` for the answers, and says which ranks
  // hold collective #seq up: those that have not entered it (behind), those that did not answer
  // (stopped or hung) and those that are gone.
  std::string survey(uint64_t seq, std::chrono::milliseconds within);

 private:
  enum Status : uint8_t { kAlive = 0, kLeft = 1, kDead = 2 };
  enum Phase : uint8_t { kNone = 0, kRunning = 1, kFinished = 2, kFailed = 3 };
  struct Peer {
    tcp::Fd fd;
    bool local = false;
    Clock::time_point lastHeard{};
    uint64_t seq = 0;
    Phase phase = kNone;
    std::string what;
    uint64_t answered = 0;  // the latest probe it answered
    std::string why;        // why it is gone
    std::string gaveUp;     // why it gave up on the group (its notice)
    std::string in, out;    // partial message read; bytes still to write
  };
  friend struct LivenessRegistry;

  void connect(Store& store, const std::string& prefix, const TransportOptions& options);
  void run();
  void readFrom(int p, Clock::time_point now);
  void handle(int p, const char* msg, Clock::time_point now);
  void sendTo(int p, uint8_t kind, uint64_t probe, const std::string& notice = {});
  void flush(int p);
  void markGone(int p, Status status, const std::string& why);
  void wake();
  void closeAll();
  std::string describe(int p) const;  // "in ALLREDUCE #57", "idle after BROADCAST #56"

  const int rank_, size_;
  const std::vector<std::string> hostNames_;
  const std::vector<int> hostOf_;
  const std::chrono::milliseconds interval_, silence_;
  std::unique_ptr<std::atomic<uint8_t>[]> status_;
  mutable std::mutex mu_;  // everything below
  std::condition_variable answered_;
  std::vector<Peer> peers_;
  uint64_t seq_ = 0;
  Phase phase_ = kNone;
  std::string what_;
  uint64_t probe_ = 0;           // the latest survey's probe number
  bool probeWanted_ = false;     // the thread sends probe_ to every peer
  bool stop_ = false, left_ = false;
  std::string unixPath_;         // our listening unix socket while peers connect
  tcp::Fd wakeFd_;
  std::thread thread_;
  std::atomic<bool> forked_{false};  // this object was copied into a forked child: do nothing
};

}  // namespace zcoll
