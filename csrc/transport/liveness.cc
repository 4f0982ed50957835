#include "transport/liveness.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <random>
#include <set>
#include <sstream>

#include "transport/handshake.h"
#include "transport/tcp/address.h"

namespace zcoll {
namespace {

constexpr uint64_t kLivenessHello = 0x7a636f6c6c6c7665ULL;  // "zcolllve"
constexpr uint32_t kBeatMagic = 0x7a6c6976;                  // "zliv"

enum Kind : uint8_t { kHeartbeat = 1, kProbe = 2, kAnswer = 3, kBye = 4, kGaveUp = 5 };

// Every message on a liveness channel: this fixed-size header; a kGaveUp notice is followed by
// `probe` bytes of text (at most kMaxNotice).
struct Beat {
  uint32_t magic;
  uint8_t kind;
  uint8_t phase;
  uint16_t reserved;
  uint64_t seq;
  uint64_t probe;
  char what[24];
};
static_assert(sizeof(Beat) == 48, "liveness messages are 48 bytes");

// A peer that stops reading gets no more than this queued: its heartbeats are stale anyway.
constexpr size_t kMaxQueued = 64 * sizeof(Beat);
constexpr size_t kMaxNotice = 2048;

std::string seconds(Clock::duration d) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << std::chrono::duration<double>(d).count() << " s";
  return os.str();
}

std::string uniqueSocketPath(int rank) {
  std::random_device rd;
  char buf[96];
  std::snprintf(buf, sizeof buf, "/dev/shm/zcoll-live-%d-r%d-%08x", static_cast<int>(getpid()), rank, rd());
  return buf;
}

sockaddr_un unixAddress(const std::string& path, const std::string& ctx) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  ZCOLL_CHECK(path.size() < sizeof a.sun_path, ctx, "socket path too long: ", path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

// A connection to a peer's unix socket, retried while its backlog is full.
tcp::Fd connectUnix(const std::string& path, Deadline deadline, const std::string& ctx, const tcp::Interrupt& interrupt) {
  const sockaddr_un a = unixAddress(path, ctx);
  for (auto backoff = std::chrono::milliseconds(1);; backoff = std::min(backoff * 2, std::chrono::milliseconds(100))) {
    tcp::Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ZCOLL_CHECK(fd, ctx, "socket() failed: ", tcp::errnoText(errno));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) return fd;
    const int err = errno;
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EINTR, ctx, "cannot connect to ", path, ": ",
                   tcp::errnoText(err), " (do the ranks share /dev/shm? else set ZCOLL_TRANSPORT=tcp)");
    ZCOLL_CHECK_AS(TimeoutError, Clock::now() < deadline, ctx, "timed out connecting to ", path);
    if (interrupt) interrupt();
    std::this_thread::sleep_for(backoff);
  }
}

}  // namespace

// Every live Liveness of the process, so that a forked child closes their channels: a child
// that kept them open would hide its parent's death from the peers.
struct LivenessRegistry {
  std::mutex mu;
  std::set<Liveness*> all;

  static LivenessRegistry& get() {
    static LivenessRegistry* r = [] {
      auto* reg = new LivenessRegistry();  // never destroyed: fork handlers may run at any time
      pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); }, [] {
        LivenessRegistry& g = get();
        new (&g.mu) std::mutex();  // the parent's lock state is meaningless in the child
        for (Liveness* l : g.all) {
          l->forked_.store(true);
          for (auto& p : l->peers_)
            if (p.fd) ::close(p.fd.get());
        }
      });
      return reg;
    }();
    return *r;
  }
};

Liveness::Liveness(Store& store, const std::string& prefix, int rank, int size, const TransportOptions& options,
                   std::vector<bool> local)
    : rank_(rank), size_(size), hostNames_(options.hostNames), hostOf_(options.hostOf),
      interval_(options.heartbeatInterval), silence_(options.heartbeatTimeout),
      status_(new std::atomic<uint8_t>[static_cast<size_t>(size)]), peers_(static_cast<size_t>(size)) {
  for (int p = 0; p < size; ++p) {
    status_[p].store(kAlive);
    peers_[p].local = local[p];
  }
  wakeFd_ = tcp::Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ZCOLL_CHECK(wakeFd_, "rank ", rank, " liveness: eventfd failed: ", tcp::errnoText(errno));
  if (size > 1) connect(store, prefix, options);
  const auto now = Clock::now();
  for (auto& p : peers_) p.lastHeard = now;
  {
    LivenessRegistry& reg = LivenessRegistry::get();
    std::lock_guard<std::mutex> lock(reg.mu);
    reg.all.insert(this);
  }
  thread_ = std::thread([this] { run(); });
}

Liveness::~Liveness() {
  {
    LivenessRegistry& reg = LivenessRegistry::get();
    std::lock_guard<std::mutex> lock(reg.mu);
    reg.all.erase(this);
  }
  if (forked_.load()) {  // a forked child's copy: the thread is the parent's, the sockets closed
    thread_.detach();
    for (auto& p : peers_) (void)p.fd.release();
    return;
  }
  leave();
}

void Liveness::leave() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (left_) return;
    left_ = stop_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
  // Goodbye, then close: the peers see the closure after the goodbye, so they know we left.
  for (int p = 0; p < size_; ++p)
    if (peers_[p].fd && !gone(p)) {
      sendTo(p, kBye, 0);
      flush(p);
    }
  closeAll();
}

void Liveness::closeAll() {
  for (auto& p : peers_) p.fd.reset();
  if (!unixPath_.empty()) ::unlink(unixPath_.c_str());
  unixPath_.clear();
}

std::string Liveness::who(int peer) const {
  std::string s = "rank " + std::to_string(peer);
  if (!hostNames_.empty() && peer < static_cast<int>(hostOf_.size())) s += " (" + hostNames_[hostOf_[peer]] + ")";
  return s;
}

std::string Liveness::whyGone(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  return peers_[peer].why;
}

void Liveness::connect(Store& store, const std::string& prefix, const TransportOptions& options) {
  const std::string ctx = who(rank_) + " liveness: ";
  Rendezvous rendezvous(store, options.failKey.empty() ? prefix + "/failed" : options.failKey, ctx);
  const tcp::Interrupt interrupt = [&] { rendezvous.checkFailed(); };
  const Deadline deadline = Clock::now() + options.timeout;
  try {
    const HelloSpec me{kLivenessHello, groupHash(prefix),
                       options.secret ? *options.secret : groupSecret(store, prefix + "/secret", rank_, deadline, rendezvous),
                       rank_, size_};
    bool anyLocal = false, anyRemote = false;
    for (int p = 0; p < size_; ++p)
      if (p != rank_) (peers_[p].local ? anyLocal : anyRemote) = true;
    std::vector<tcp::Fd> listeners;
    std::string published;  // "<unix path>\n<host:port>"; either may be empty
    if (anyLocal) {
      unixPath_ = uniqueSocketPath(rank_);
      tcp::Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ZCOLL_CHECK(fd, ctx, "socket() failed: ", tcp::errnoText(errno));
      const sockaddr_un a = unixAddress(unixPath_, ctx);
      ZCOLL_CHECK(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0, ctx, "cannot bind ", unixPath_,
                  ": ", tcp::errnoText(errno));
      ZCOLL_CHECK(::listen(fd.get(), SOMAXCONN) == 0, ctx, "listen failed: ", tcp::errnoText(errno));
      listeners.push_back(std::move(fd));
      published = unixPath_;
    }
    published += "\n";
    if (anyRemote) {
      const tcp::AddressChoice choice = tcp::advertisedAddress(options, true, ctx);
      int port = 0;
      listeners.push_back(tcp::listenOn(choice.address, port, ctx));
      published += tcp::Endpoint{choice.address, port}.str();
    }
    const auto key = [&](int r) { return prefix + "/live/" + std::to_string(r); };
    store.set(key(rank_), std::vector<uint8_t>(published.begin(), published.end()));
    for (int p = 0; p < rank_; ++p) {
      const auto value = rendezvous.await(key(p), deadline, "rank " + std::to_string(p) + " to publish its liveness address");
      const std::string text(value.begin(), value.end());
      const size_t nl = text.find('\n');
      ZCOLL_CHECK(nl != std::string::npos, ctx, "malformed liveness address of rank ", p);
      const std::string dialCtx = ctx + "connecting to " + who(p) + ": ";
      if (peers_[p].local) {
        peers_[p].fd = connectUnix(text.substr(0, nl), deadline, dialCtx, interrupt);
      } else {
        const tcp::Endpoint to = tcp::Endpoint::parse(text.substr(nl + 1), dialCtx);
        peers_[p].fd = tcp::connectTo(to, std::min(deadline, Clock::now() + options.connectTimeout), dialCtx,
                                      "check ZCOLL_SOCKET_IFNAME and firewalls (docs/multi-host.md)", interrupt);
      }
      sendHello(peers_[p].fd.get(), me, p, deadline, dialCtx, interrupt);
    }
    std::vector<bool> higher(size_, false);
    for (int p = rank_ + 1; p < size_; ++p) higher[p] = true;
    std::vector<int> listening;
    for (const auto& l : listeners) listening.push_back(l.get());
    auto accepted = acceptPeers(listening, me, higher, deadline, kHelloTimeout, ctx + "accepting higher ranks: ", interrupt);
    for (int p = rank_ + 1; p < size_; ++p) peers_[p].fd = std::move(accepted[p]);
    if (!unixPath_.empty()) ::unlink(unixPath_.c_str());  // everyone who dials us has: leave nothing behind
    unixPath_.clear();
    for (int p = 0; p < rank_; ++p) expectReply(peers_[p].fd.get(), me, p, deadline, ctx + "connecting to " + who(p) + ": ", interrupt);
  } catch (const Error& e) {
    closeAll();
    rendezvous.checkFailed();  // another rank failed first: report that cause
    rendezvous.fail(e.what());
    throw;
  }
}

void Liveness::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wakeFd_.get(), &one, sizeof one);
}

void Liveness::entered(uint64_t seq, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  seq_ = seq;
  phase_ = kRunning;
  what_ = what;
}

void Liveness::finished(uint64_t seq, bool failed) {
  std::lock_guard<std::mutex> lock(mu_);
  if (seq_ == seq) phase_ = failed ? kFailed : kFinished;
}

void Liveness::gaveUp(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return;
  const std::string text = why.substr(0, kMaxNotice);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_ || gone(p)) continue;
    sendTo(p, kGaveUp, text.size(), text);
    flush(p);  // now: the transports hang up right after
  }
}

std::string Liveness::whyGaveUp(int peer, std::chrono::milliseconds within) {
  std::unique_lock<std::mutex> lock(mu_);
  answered_.wait_for(lock, within, [&] { return !peers_[peer].gaveUp.empty() || gone(peer); });
  return peers_[peer].gaveUp;
}

// Queues a message to peer p (under mu_, or after the thread has stopped): the header, then
// `notice` (a kGaveUp's text, whose length is `probe`). Notices are queued even to a peer that
// has stopped reading; other messages only up to kMaxQueued.
void Liveness::sendTo(int p, uint8_t kind, uint64_t probe, const std::string& notice) {
  Peer& peer = peers_[p];
  if (!peer.fd || (notice.empty() && peer.out.size() >= kMaxQueued)) return;
  Beat b{};
  b.magic = kBeatMagic;
  b.kind = kind;
  b.phase = phase_;
  b.seq = seq_;
  b.probe = probe;
  std::snprintf(b.what, sizeof b.what, "%s", what_.c_str());
  peer.out.append(reinterpret_cast<const char*>(&b), sizeof b);
  peer.out += notice;
}

void Liveness::flush(int p) {
  Peer& peer = peers_[p];
  while (!peer.out.empty() && peer.fd) {
    const ssize_t k = ::send(peer.fd.get(), peer.out.data(), peer.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      peer.out.erase(0, static_cast<size_t>(k));
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // the peer is not reading: try later
    peer.out.clear();  // a broken connection: the reader side reports it
    return;
  }
}

void Liveness::markGone(int p, Status status, const std::string& why) {
  if (status_[p].load() != kAlive) return;
  peers_[p].why = why;
  status_[p].store(status, std::memory_order_release);
  answered_.notify_all();
}

void Liveness::handle(int p, const char* msg, Clock::time_point now) {
  Beat b;
  std::memcpy(&b, msg, sizeof b);
  Peer& peer = peers_[p];
  if (b.magic != kBeatMagic) {
    markGone(p, kDead, who(p) + " sent garbage on its liveness channel; treating it as dead");
    return;
  }
  peer.lastHeard = now;
  peer.seq = b.seq;
  peer.phase = static_cast<Phase>(b.phase);
  peer.what.assign(b.what, strnlen(b.what, sizeof b.what));
  switch (b.kind) {
    case kProbe:
      sendTo(p, kAnswer, b.probe);
      flush(p);
      break;
    case kAnswer:
      peer.answered = std::max(peer.answered, b.probe);
      answered_.notify_all();
      break;
    case kBye:
      markGone(p, kLeft, who(p) + " left the group (destroyed its process group)");
      break;
    default:
      break;  // a heartbeat: its state is recorded above
  }
}

void Liveness::readFrom(int p, Clock::time_point now) {
  Peer& peer = peers_[p];
  char buf[16 * sizeof(Beat)];
  for (;;) {
    const ssize_t k = ::recv(peer.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (k > 0) {
      peer.in.append(buf, static_cast<size_t>(k));
      size_t at = 0;
      while (peer.in.size() - at >= sizeof(Beat)) {
        Beat b;
        std::memcpy(&b, peer.in.data() + at, sizeof b);
        if (b.magic == kBeatMagic && b.kind == kGaveUp) {  // header + text
          const size_t len = std::min<uint64_t>(b.probe, kMaxNotice);
          if (peer.in.size() - at < sizeof b + len) break;
          peer.gaveUp.assign(peer.in.data() + at + sizeof b, len);
          peer.lastHeard = now;
          answered_.notify_all();
          at += sizeof b + len;
          continue;
        }
        handle(p, peer.in.data() + at, now);
        at += sizeof(Beat);
      }
      peer.in.erase(0, at);
      if (gone(p)) return;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // Closed (or reset) without a goodbye: the process is gone, whether or not it was reaped.
    markGone(p, kDead, who(p) + " died: its liveness connection " +
                           (k == 0 ? std::string("closed") : "failed (" + tcp::errnoText(errno) + ")") +
                           " without a goodbye (the process exited or was killed)");
    peer.fd.reset();
    return;
  }
}

void Liveness::run() {
  std::vector<pollfd> fds;
  std::vector<int> owners;
  auto nextBeat = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    auto now = Clock::now();
    if (now >= nextBeat) {
      for (int p = 0; p < size_; ++p)
        if (p != rank_ && !gone(p)) sendTo(p, kHeartbeat, 0);
      nextBeat = now + interval_;
    }
    if (probeWanted_) {
      probeWanted_ = false;
      for (int p = 0; p < size_; ++p)
        if (p != rank_ && !gone(p)) sendTo(p, kProbe, probe_);
    }
    fds.assign(1, pollfd{wakeFd_.get(), POLLIN, 0});
    owners.assign(1, -1);
    for (int p = 0; p < size_; ++p) {
      Peer& peer = peers_[p];
      if (p == rank_ || !peer.fd || status_[p].load() == kDead) continue;
      flush(p);
      if (status_[p].load() == kAlive && now - peer.lastHeard > silence_)
        markGone(p, kDead, who(p) + " sent no heartbeat for " + seconds(now - peer.lastHeard) +
                               " (ZCOLL_HEARTBEAT_TIMEOUT): it is stopped or hung, or its host or the network is down");
      fds.push_back({peer.fd.get(), static_cast<short>(POLLIN | (peer.out.empty() ? 0 : POLLOUT)), 0});
      owners.push_back(p);
    }
    lock.unlock();
    const int rc = ::poll(fds.data(), fds.size(), tcp::pollMillis(nextBeat));
    lock.lock();
    if (rc <= 0) continue;
    if (fds[0].revents & POLLIN) {
      uint64_t drained;
      [[maybe_unused]] const ssize_t n = ::read(wakeFd_.get(), &drained, sizeof drained);
    }
    now = Clock::now();
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) readFrom(owners[i], now);
  }
}

std::string Liveness::describe(int p) const {
  const Peer& peer = peers_[p];
  if (peer.phase == kNone) return "before any collective";
  const char* where = peer.phase == kRunning ? "in " : peer.phase == kFailed ? "failed in " : "idle after ";
  return where + peer.what + " #" + std::to_string(peer.seq);
}

std::string Liveness::survey(uint64_t seq, std::chrono::milliseconds within) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || size_ == 1) return "";
  const uint64_t probe = ++probe_;
  probeWanted_ = true;
  wake();
  const auto allAnswered = [&] {
    for (int p = 0; p < size_; ++p)
      if (p != rank_ && !gone(p) && peers_[p].answered < probe) return false;
    return true;
  };
  answered_.wait_for(lock, within, allAnswered);
  const auto now = Clock::now();
  std::string where, behind, silent, dead;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    const Peer& peer = peers_[p];
    const std::string name = who(p);
    std::string line;
    if (gone(p)) {
      line = peer.why;
      dead += (dead.empty() ? "" : ", ") + name;
    } else if (peer.answered < probe) {
      line = name + " did not answer within " + seconds(within) + " (last heard " + seconds(now - peer.lastHeard) +
             " ago, then " + describe(p) + "): stopped, or hung";
      silent += (silent.empty() ? "" : ", ") + name;
    } else {
      line = name + ": " + describe(p);
      if (peer.phase == kNone || peer.seq < seq) behind += (behind.empty() ? "" : ", ") + name;
    }
    where += "; " + line;
  }
  std::string verdict;
  if (!behind.empty()) verdict += " behind (not yet in collective #" + std::to_string(seq) + "): " + behind + ";";
  if (!silent.empty()) verdict += " not answering: " + silent + ";";
  if (!dead.empty()) verdict += " gone: " + dead + ";";
  if (verdict.empty()) verdict = " every rank has entered collective #" + std::to_string(seq) + " and answers;";
  return "holding it up:" + verdict + " where the ranks are" + where;
}

}  // namespace zcoll
