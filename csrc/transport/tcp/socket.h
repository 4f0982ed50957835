// Socket plumbing for the tcp transport: listen/connect/accept with deadlines, and the
// blocking-with-deadline I/O the bootstrap handshake needs. Private to csrc/transport/tcp; the
// progress engine does its own non-blocking I/O. Addresses are in address.h.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "transport/tcp/address.h"
#include "transport/transport.h"

namespace zcoll::tcp {

// Owns one file descriptor and closes it once.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Gives the descriptor up without closing it.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// strerror(err) as a std::string (thread-safe).
inline std::string errnoText(int err) {
  char buf[256];
  // GNU strerror_r returns the message (possibly not in buf).
  return std::string(strerror_r(err, buf, sizeof buf)) + " (errno " + std::to_string(err) + ")";
}

// Milliseconds poll() should sleep so it wakes no later than `deadline` (rounded up, >= 0).
inline int pollMillis(Deadline deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

// Called between the slices of a long bootstrap wait (at least every kCheckEvery): throws to
// abandon it, e.g. when another rank has reported a failure through the store.
using Interrupt = std::function<void()>;
constexpr auto kCheckEvery = std::chrono::milliseconds(100);

namespace detail {

constexpr int kBufferBytes = 4 << 20;

inline long sysctlLong(const char* path) {
  long v = 0;
  if (FILE* f = std::fopen(path, "r")) {
    if (std::fscanf(f, "%ld", &v) != 1) v = 0;
    std::fclose(f);
  }
  return v;
}

// Linux turns buffer autotuning off for a socket once SO_SNDBUF/SO_RCVBUF is set, and silently
// caps the value at net.core.[rw]mem_max (often 208 KiB): setting it where the cap is low would
// shrink buffers that autotuning grows to several MiB. So ask only where the full size is granted.
// Call before listen()/connect(): the receive window scale is fixed by the SYN.
inline void setBuffers(int fd) {
  static const bool sendOk = sysctlLong("/proc/sys/net/core/wmem_max") >= kBufferBytes;
  static const bool recvOk = sysctlLong("/proc/sys/net/core/rmem_max") >= kBufferBytes;
  const int bytes = kBufferBytes;
  if (sendOk) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  if (recvOk) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

// Small framed messages must not wait for Nagle's algorithm to coalesce them.
inline void setNoDelay(int fd, const std::string& ctx) {
  const int one = 1;
  ZCOLL_CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, ctx, "TCP_NODELAY failed: ",
              errnoText(errno));
}

// Sleeps in poll() until fd has `events` (true) or the deadline passes (false), calling
// `interrupt` every kCheckEvery.
inline bool pollFor(int fd, short events, Deadline deadline, const Interrupt& interrupt = nullptr) {
  for (;;) {
    const Deadline slice = interrupt ? std::min(deadline, Clock::now() + kCheckEvery) : deadline;
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, pollMillis(slice));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let the caller's next call report the error
    if (Clock::now() >= deadline) return false;
    if (interrupt) interrupt();
  }
}

// Errors that mean "no answer yet / the network hiccuped": worth retrying for a while.
inline bool transientConnectError(int err) {
  switch (err) {
    case ECONNREFUSED: case ETIMEDOUT: case ECONNRESET: case ECONNABORTED:
    case ENETUNREACH: case EHOSTUNREACH: case EAGAIN: case EINTR: case EADDRNOTAVAIL:
      return true;
    default:
      return false;
  }
}

// One connection attempt; returns 0 or the errno that ended it.
inline int connectOnce(int fd, const sockaddr_storage& to, socklen_t len, Deadline deadline,
                       const Interrupt& interrupt) {
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), len) == 0) return 0;
  if (errno != EINPROGRESS && errno != EINTR) return errno;
  if (!pollFor(fd, POLLOUT, deadline, interrupt)) return ETIMEDOUT;
  int err = 0;
  socklen_t errLen = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errLen) != 0) return errno;
  return err;
}

}  // namespace detail

// A non-blocking listening socket on `host` (IPv4 or IPv6), port chosen by the kernel (returned
// in `port`).
inline Fd listenOn(const std::string& host, int& port, const std::string& ctx) {
  socklen_t len = 0;
  sockaddr_storage sa = socketAddress(host, 0, ctx, &len);
  Fd fd(socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ZCOLL_CHECK(fd, ctx, "socket() failed: ", errnoText(errno));
  detail::setBuffers(fd.get());  // accepted sockets inherit them, window scale included
  ZCOLL_CHECK_AS(NetworkError, bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) == 0, ctx, "cannot bind to ",
                 host, ": ", errnoText(errno), " (is it an address of this host? see ZCOLL_SOCKET_IFNAME)");
  ZCOLL_CHECK(listen(fd.get(), SOMAXCONN) == 0, ctx, "listen failed: ", errnoText(errno));
  socklen_t got = sizeof sa;
  ZCOLL_CHECK(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &got) == 0, ctx, "getsockname failed: ",
              errnoText(errno));
  port = ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(sa).sin6_port
                                        : reinterpret_cast<sockaddr_in&>(sa).sin_port);
  return fd;
}

// A non-blocking connection to `to`. A peer publishes its address only once it listens, so an
// answer other than a connection means the address does not lead to it: a refusal or "no route"
// is final after kDefinite of retries (a network hiccup), silence (a firewall dropping the way)
// after `giveUp`; then NetworkError with the last error and `hint` (what to set). `interrupt` is
// called between attempts and while waiting.
constexpr auto kDefinite = std::chrono::seconds(2);

inline Fd connectTo(const Endpoint& to, Deadline giveUp, const std::string& ctx, const std::string& hint,
                    const Interrupt& interrupt) {
  socklen_t len = 0;
  const sockaddr_storage addr = socketAddress(to.host, to.port, ctx, &len);
  const auto start = Clock::now();
  giveUp = std::max(giveUp, start);
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    Fd fd(socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ZCOLL_CHECK(fd, ctx, "socket() failed: ", errnoText(errno));
    detail::setBuffers(fd.get());
    const int err = detail::connectOnce(fd.get(), addr, len, giveUp, interrupt);
    if (err == 0) {
      detail::setNoDelay(fd.get(), ctx);
      return fd;
    }
    const auto now = Clock::now();
    const bool definite = err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH;
    const bool retry = detail::transientConnectError(err) && now + backoff < giveUp &&
                       !(definite && now - start >= kDefinite);
    ZCOLL_CHECK_AS(NetworkError, retry, ctx, "cannot connect to ", to.str(), " (tried for ",
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count() / 1000.0,
                   " s; last error: ", errnoText(err), "); ", hint);
    if (interrupt) interrupt();
    std::this_thread::sleep_for(backoff);  // the network may hiccup: back off, retry
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
}

// The next connection on `listenFd` (non-blocking, tuned), or TimeoutError at `deadline`.
inline Fd acceptBy(int listenFd, Deadline deadline, const std::string& ctx, const Interrupt& interrupt) {
  for (;;) {
    Fd fd(accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd) {
      detail::setNoDelay(fd.get(), ctx);
      return fd;
    }
    const int err = errno;
    // ECONNABORTED: a client gave up between SYN and accept; it will retry.
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED, ctx,
                   "accept failed: ", errnoText(err));
    if (!detail::pollFor(listenFd, POLLIN, deadline, interrupt))
      throw TimeoutError(ctx + "timed out waiting for a connection");
  }
}

// Exactly n bytes through a non-blocking socket, sleeping in poll() until `deadline`.
inline void sendAllBy(int fd, const void* data, size_t n, Deadline deadline, const std::string& ctx,
                      const Interrupt& interrupt = nullptr) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    const int err = errno;
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR, ctx, "send failed: ",
                   errnoText(err));
    if (!detail::pollFor(fd, POLLOUT, deadline, interrupt)) throw TimeoutError(ctx + "timed out sending");
  }
}

inline void recvAllBy(int fd, void* data, size_t n, Deadline deadline, const std::string& ctx,
                      const Interrupt& interrupt = nullptr) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    ZCOLL_CHECK_AS(NetworkError, k != 0, ctx, "connection closed by the peer");
    const int err = errno;
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR, ctx, "recv failed: ",
                   errnoText(err));
    if (!detail::pollFor(fd, POLLIN, deadline, interrupt)) throw TimeoutError(ctx + "timed out receiving");
  }
}

}  // namespace zcoll::tcp
