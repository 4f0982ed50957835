// zcoll's one error type and the check macro every layer uses (docs/architecture.md: errors).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace zcoll {

// Thrown by every zcoll layer; the bindings turn it into a Python RuntimeError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
[[noreturn]] void throwError(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " [" << cond << " failed at " << file << ":" << line << "]";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace zcoll

// ZCOLL_CHECK(cond, "message parts", ...): throws zcoll::Error naming the message and file:line.
#define ZCOLL_CHECK(cond, ...)                                                    \
  do {                                                                            \
    if (!(cond)) ::zcoll::detail::throwError(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)
