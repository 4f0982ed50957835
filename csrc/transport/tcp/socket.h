// Socket plumbing for the tcp transport: the address to advertise, listen/connect/accept with
// deadlines, and the blocking-with-deadline I/O the bootstrap handshake needs. Private to
// csrc/transport/tcp (included by tcp_transport.cc only, hence header-only: no build change);
// the progress engine does its own non-blocking I/O.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

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

 private:
  int fd_ = -1;
};

// An IPv4 endpoint as published in the store: "a.b.c.d:port".
struct Endpoint {
  std::string host;
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
  static Endpoint parse(const std::string& s, const std::string& ctx);
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

namespace detail {

constexpr int kBufferBytes = 4 << 20;

inline std::string ipv4Text(const in_addr& a) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// IPv4 address of `host`: dotted quad or a name resolved through getaddrinfo.
inline in_addr resolveIpv4(const std::string& host, const std::string& ctx) {
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) return a;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  ZCOLL_CHECK_AS(NetworkError, rc == 0 && res != nullptr, ctx, "cannot resolve '", host, "' to an IPv4 address: ",
              rc == 0 ? "no address" : gai_strerror(rc));
  a = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return a;
}

inline sockaddr_in socketAddress(const std::string& host, int port, const std::string& ctx) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr = resolveIpv4(host, ctx);
  return sa;
}

inline std::string interfaceAddress(const std::string& ifname, const std::string& ctx) {
  ifaddrs* list = nullptr;
  ZCOLL_CHECK(getifaddrs(&list) == 0, ctx, "getifaddrs failed: ", errnoText(errno));
  std::string found, others;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    const std::string ip = ipv4Text(reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr);
    if (ifname == a->ifa_name && found.empty()) found = ip;
    else others += std::string(" ") + a->ifa_name + "=" + ip;
  }
  freeifaddrs(list);
  ZCOLL_CHECK_AS(NetworkError, !found.empty(), ctx, "interface '", ifname, "' (ZCOLL_SOCKET_IFNAME) has no IPv4 address; IPv4 interfaces:",
              others.empty() ? " none" : others);
  return found;
}

// The source address the kernel would use to reach `host`. Connecting a UDP socket sends
// nothing; it only runs the route lookup. Unlike the hostname (which resolves to 127.0.0.1
// inside network namespaces here), this is an address the store's host can reach us at.
inline std::string routeAddress(const std::string& host, const std::string& ctx) {
  sockaddr_in to = socketAddress(host, 9, ctx);  // any non-zero port will do
  Fd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ZCOLL_CHECK(fd, ctx, "socket(UDP) failed: ", errnoText(errno));
  ZCOLL_CHECK_AS(NetworkError, connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0, ctx, "no route to the store host ",
              host, ": ", errnoText(errno), " (set ZCOLL_SOCKET_IFNAME)");
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ZCOLL_CHECK(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) == 0, ctx,
              "getsockname failed: ", errnoText(errno));
  return ipv4Text(local.sin_addr);
}

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

// Sleeps in poll() until fd has `events` (true) or the deadline passes (false).
inline bool pollFor(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, pollMillis(deadline));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let the caller's next call report the error
    if (Clock::now() >= deadline) return false;
  }
}

// Errors that mean "the peer is not listening yet / the network hiccuped": worth retrying.
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
inline int connectOnce(int fd, const sockaddr_in& to, Deadline deadline) {
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) return 0;
  if (errno != EINPROGRESS && errno != EINTR) return errno;
  if (!pollFor(fd, POLLOUT, deadline)) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace detail

inline Endpoint Endpoint::parse(const std::string& s, const std::string& ctx) {
  const auto colon = s.rfind(':');
  ZCOLL_CHECK(colon != std::string::npos && colon > 0, ctx, "bad address '", s, "' in the store");
  Endpoint e{s.substr(0, colon), std::atoi(s.c_str() + colon + 1)};
  ZCOLL_CHECK(e.port > 0 && e.port < 65536, ctx, "bad port in address '", s, "' in the store");
  return e;
}

// The IPv4 address peers should use to reach this process: socketIfname's address if set, else
// the local address that routes to storeHost, else 127.0.0.1. `ctx` prefixes error messages.
inline std::string advertisedAddress(const TransportOptions& options, const std::string& ctx) {
  if (!options.socketIfname.empty()) return detail::interfaceAddress(options.socketIfname, ctx);
  if (!options.storeHost.empty()) return detail::routeAddress(options.storeHost, ctx);
  return "127.0.0.1";
}

// A non-blocking listening socket on `host`, port chosen by the kernel (returned in `port`).
inline Fd listenOn(const std::string& host, int& port, const std::string& ctx) {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ZCOLL_CHECK(fd, ctx, "socket() failed: ", errnoText(errno));
  detail::setBuffers(fd.get());  // accepted sockets inherit them, window scale included
  sockaddr_in sa = detail::socketAddress(host, 0, ctx);
  ZCOLL_CHECK_AS(NetworkError, bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0, ctx, "cannot bind to ", host,
              ": ", errnoText(errno));
  ZCOLL_CHECK(listen(fd.get(), SOMAXCONN) == 0, ctx, "listen failed: ", errnoText(errno));
  socklen_t len = sizeof sa;
  ZCOLL_CHECK(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0, ctx, "getsockname failed: ",
              errnoText(errno));
  port = ntohs(sa.sin_port);
  return fd;
}

// A non-blocking connection to `to`, retried while the peer is not reachable yet, until `deadline`.
inline Fd connectTo(const Endpoint& to, Deadline deadline, const std::string& ctx) {
  const sockaddr_in addr = detail::socketAddress(to.host, to.port, ctx);
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ZCOLL_CHECK(fd, ctx, "socket() failed: ", errnoText(errno));
    detail::setBuffers(fd.get());
    const int err = detail::connectOnce(fd.get(), addr, deadline);
    if (err == 0) {
      detail::setNoDelay(fd.get(), ctx);
      return fd;
    }
    ZCOLL_CHECK_AS(NetworkError, detail::transientConnectError(err), ctx, "connect to ", to.str(), " failed: ", errnoText(err));
    if (Clock::now() + backoff >= deadline)
      throw TimeoutError(ctx + "could not connect to " + to.str() + " before the timeout (last error: " +
                         errnoText(err) + ")");
    std::this_thread::sleep_for(backoff);  // the peer may still be starting: back off, retry
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
}

// The next connection on `listenFd` (non-blocking, tuned), or TimeoutError at `deadline`.
inline Fd acceptBy(int listenFd, Deadline deadline, const std::string& ctx) {
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
    if (!detail::pollFor(listenFd, POLLIN, deadline)) throw TimeoutError(ctx + "timed out waiting for a connection");
  }
}

// Exactly n bytes through a non-blocking socket, sleeping in poll() until `deadline`.
inline void sendAllBy(int fd, const void* data, size_t n, Deadline deadline, const std::string& ctx) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    const int err = errno;
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR, ctx, "send failed: ", errnoText(err));
    if (!detail::pollFor(fd, POLLOUT, deadline)) throw TimeoutError(ctx + "timed out sending");
  }
}

inline void recvAllBy(int fd, void* data, size_t n, Deadline deadline, const std::string& ctx) {
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
    ZCOLL_CHECK_AS(NetworkError, err == EAGAIN || err == EWOULDBLOCK || err == EINTR, ctx, "recv failed: ", errnoText(err));
    if (!detail::pollFor(fd, POLLIN, deadline)) throw TimeoutError(ctx + "timed out receiving");
  }
}

}  // namespace zcoll::tcp
