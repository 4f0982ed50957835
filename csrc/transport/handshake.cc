#include "transport/handshake.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <random>

namespace zcoll {
namespace {

// The first bytes on a connection, both ways.
struct Hello {
  uint64_t magic;
  uint64_t group;
  uint8_t secret[kSecretBytes];
  int32_t from, to, size, reserved;
};

Hello helloOf(const HelloSpec& me, int to) {
  Hello h{};
  h.magic = me.magic;
  h.group = me.group;
  std::copy(me.secret.begin(), me.secret.end(), h.secret);
  h.from = me.rank;
  h.to = to;
  h.size = me.size;
  return h;
}

// Compares secrets in time that does not depend on where they differ.
bool sameSecret(const uint8_t* a, const Secret& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < kSecretBytes; ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

// Why `h` is not a hello this end accepts from a rank in `expected` (not yet in `have`), or "".
std::string rejection(const Hello& h, const HelloSpec& me, const std::vector<bool>& expected,
                      const std::vector<tcp::Fd>& have) {
  if (h.magic != me.magic) return "not a zcoll hello of this kind of connection";
  if (!sameSecret(h.secret, me.secret))
    return h.group == me.group ? "wrong secret (not a member of this group)"
                               : "a hello for another group (its store prefix differs)";
  if (h.size != me.size) return "claims a group of " + std::to_string(h.size) + " ranks, not " + std::to_string(me.size);
  if (h.to != me.rank) return "meant for rank " + std::to_string(h.to);
  if (h.from < 0 || h.from >= me.size || !expected[static_cast<size_t>(h.from)])
    return "claims rank " + std::to_string(h.from) + ", which does not connect to this end";
  if (have[static_cast<size_t>(h.from)]) return "claims rank " + std::to_string(h.from) + ", which is already connected";
  return "";
}

// "10.0.0.5:41234", or "a local process (pid 123)" on a unix socket.
std::string peerName(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return "an unknown peer";
  if (sa.ss_family == AF_UNIX) {
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
      return "a local process (pid " + std::to_string(cred.pid) + " in its namespace)";
    return "a local process";
  }
  const int port = ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(sa).sin6_port
                                                  : reinterpret_cast<sockaddr_in&>(sa).sin_port);
  return tcp::Endpoint{tcp::hostText(sa), port}.str();
}

bool isTcp(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0 && sa.ss_family != AF_UNIX;
}

// A connection that has not said hello yet.
struct Newcomer {
  tcp::Fd fd;
  Deadline until;
  std::string from;
  Hello hello{};
  size_t got = 0;
};

// At most this many strangers are logged per bootstrap; then one line counts the rest.
constexpr int kLoggedDrops = 8;
// Connections still saying hello beyond this many are dropped at once (a connection flood).
constexpr size_t kMaxNewcomers = 256;

}  // namespace

uint64_t groupHash(const std::string& prefix) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : prefix) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

Secret groupSecret(Store& store, const std::string& key, int rank, Deadline deadline, Rendezvous& rendezvous) {
  Secret s{};
  if (rank == 0) {
    std::random_device rd;  // the kernel's random source (getrandom / /dev/urandom)
    for (size_t i = 0; i < kSecretBytes; i += 4) {
      const uint32_t v = rd();
      for (size_t j = 0; j < 4; ++j) s[i + j] = static_cast<uint8_t>(v >> (8 * j));
    }
    store.set(key, std::vector<uint8_t>(s.begin(), s.end()));
    return s;
  }
  const auto value = rendezvous.await(key, deadline, "rank 0 to publish the group's secret");
  ZCOLL_CHECK(value.size() == kSecretBytes, "the group's secret in the store has ", value.size(), " bytes, not ",
              kSecretBytes);
  std::copy(value.begin(), value.end(), s.begin());
  return s;
}

void sendHello(int fd, const HelloSpec& me, int to, Deadline deadline, const std::string& ctx,
               const tcp::Interrupt& interrupt) {
  const Hello h = helloOf(me, to);
  tcp::sendAllBy(fd, &h, sizeof h, deadline, ctx, interrupt);
}

void expectReply(int fd, const HelloSpec& me, int peer, Deadline deadline, const std::string& ctx,
                 const tcp::Interrupt& interrupt) {
  Hello h{};
  try {
    tcp::recvAllBy(fd, &h, sizeof h, deadline, ctx, interrupt);
  } catch (const NetworkError& e) {
    throw NetworkError(std::string(e.what()) + " while waiting for rank " + std::to_string(peer) +
                       "'s reply to our hello: the address may be stale or belong to another job");
  }
  ZCOLL_CHECK_AS(NetworkError, h.magic == me.magic, ctx, "the peer is not a zcoll endpoint of this kind (hello magic 0x",
                 std::hex, h.magic, ")");
  ZCOLL_CHECK_AS(NetworkError, sameSecret(h.secret, me.secret), ctx,
                 "the peer does not know this group's secret (another job's rank at a stale address?)");
  ZCOLL_CHECK_AS(NetworkError, h.size == me.size, ctx, "group sizes differ: ", me.size, " here, ", h.size, " at rank ",
                 h.from);
  ZCOLL_CHECK_AS(NetworkError, h.from == peer && h.to == me.rank, ctx, "reached rank ", h.from, " instead of rank ",
                 peer, " (stale address in the store?)");
}

std::vector<tcp::Fd> acceptPeers(const std::vector<int>& listeners, const HelloSpec& me,
                                 const std::vector<bool>& expected, Deadline deadline,
                                 std::chrono::milliseconds helloTimeout, const std::string& ctx,
                                 const tcp::Interrupt& interrupt) {
  std::vector<tcp::Fd> peers(static_cast<size_t>(me.size));
  size_t missing = 0;
  for (bool e : expected) missing += e;
  std::vector<Newcomer> newcomers;
  int drops = 0;
  const log::Logger logger{log::Level::kWarn, me.rank};
  const auto drop = [&](Newcomer& n, const std::string& why) {
    if (++drops <= kLoggedDrops)
      logger.warn(ctx, "dropped a connection from ", n.from, ": ", why);
    else if (drops == kLoggedDrops + 1)
      logger.warn(ctx, "more connections dropped; not logging them");
    n.fd.reset();
  };
  std::vector<pollfd> fds;
  auto nextCheck = Clock::now() + tcp::kCheckEvery;
  while (missing > 0) {
    const auto now = Clock::now();
    if (now >= deadline) {
      std::string absent;
      for (int r = 0; r < me.size; ++r)
        if (expected[static_cast<size_t>(r)] && !peers[static_cast<size_t>(r)]) absent += " " + std::to_string(r);
      throw TimeoutError(ctx + "timed out waiting for ranks" + absent + " to connect");
    }
    if (now >= nextCheck) {
      if (interrupt) interrupt();
      nextCheck = now + tcp::kCheckEvery;
    }
    Deadline wake = std::min(deadline, nextCheck);
    fds.clear();
    for (int l : listeners) fds.push_back({l, POLLIN, 0});
    for (const Newcomer& n : newcomers) {
      fds.push_back({n.fd.get(), POLLIN, 0});
      wake = std::min(wake, n.until);
    }
    const int rc = ::poll(fds.data(), fds.size(), tcp::pollMillis(wake));
    ZCOLL_CHECK(rc >= 0 || errno == EINTR, ctx, "poll failed: ", tcp::errnoText(errno));
    // Hellos first (their fds sit after the listeners), then new connections.
    for (size_t i = 0; i < newcomers.size(); ++i) {
      Newcomer& n = newcomers[i];
      if (rc <= 0 || !(fds[listeners.size() + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t k = ::recv(n.fd.get(), reinterpret_cast<char*>(&n.hello) + n.got, sizeof(Hello) - n.got, 0);
      if (k == 0) {
        drop(n, "closed before completing a hello");
        continue;
      }
      if (k < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) drop(n, tcp::errnoText(errno));
        continue;
      }
      n.got += static_cast<size_t>(k);
      if (n.got < sizeof(Hello)) continue;
      const std::string why = rejection(n.hello, me, expected, peers);
      if (!why.empty()) {
        drop(n, why);
        continue;
      }
      const Hello reply = helloOf(me, n.hello.from);
      try {
        tcp::sendAllBy(n.fd.get(), &reply, sizeof reply, std::min(deadline, Clock::now() + helloTimeout), ctx);
      } catch (const Error& e) {
        drop(n, std::string("could not answer its hello: ") + e.what());
        continue;
      }
      peers[static_cast<size_t>(n.hello.from)] = std::move(n.fd);
      --missing;
    }
    const auto later = Clock::now();
    for (Newcomer& n : newcomers)
      if (n.fd && later >= n.until)
        drop(n, "said no hello within " + std::to_string(helloTimeout.count()) + " ms");
    newcomers.erase(std::remove_if(newcomers.begin(), newcomers.end(), [](const Newcomer& n) { return !n.fd; }),
                    newcomers.end());
    for (size_t i = 0; i < listeners.size() && rc > 0; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      for (;;) {  // every connection waiting on this listener
        tcp::Fd fd(accept4(listeners[i], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
          const int err = errno;
          // ECONNABORTED: a client gave up between SYN and accept.
          ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED, ctx,
                         "accept failed: ", tcp::errnoText(err));
          if (err == EAGAIN || err == EWOULDBLOCK) break;
          continue;
        }
        Newcomer n{std::move(fd), later + helloTimeout, ""};
        n.from = peerName(n.fd.get());
        if (newcomers.size() >= kMaxNewcomers) {
          drop(n, "too many connections saying hello at once");
          continue;
        }
        if (isTcp(n.fd.get())) tcp::detail::setNoDelay(n.fd.get(), ctx);
        newcomers.push_back(std::move(n));
      }
    }
  }
  return peers;
}

}  // namespace zcoll
