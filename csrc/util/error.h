// zcoll's error types and the check macros every layer uses (docs/architecture.md: errors).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace zcoll {

// Thrown by every torch-free zcoll layer; the backend turns it into torch's DistBackendError
// (csrc/backend/errors.h), the test bindings into a Python RuntimeError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A wait ran past its deadline; the message names the rank, the peer and what was waited for.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// The network under a transport failed: a connection refused, reset or closed, an address that
// cannot be resolved or bound, a peer that does not speak zcoll's protocol.
class NetworkError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename E, typename... Args>
[[noreturn]] void throwError(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " [" << cond << " failed at " << file << ":" << line << "]";
  throw E(os.str());
}
}  // namespace detail

}  // namespace zcoll

// ZCOLL_CHECK(cond, "message parts", ...): throws zcoll::Error naming the message and file:line.
#define ZCOLL_CHECK(cond, ...) ZCOLL_CHECK_AS(::zcoll::Error, cond, __VA_ARGS__)

// The same with another zcoll::Error type, e.g. ZCOLL_CHECK_AS(NetworkError, fd >= 0, ...).
#define ZCOLL_CHECK_AS(type, cond, ...)                                                     \
  do {                                                                                      \
    if (!(cond)) ::zcoll::detail::throwError<type>(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)
