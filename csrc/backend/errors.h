// zcoll's failures as torch's exception hierarchy (docs/architecture.md, errors), so that code
// written against gloo or NCCL catches them:
//
//   bad arguments          ArgumentError / ArgumentTypeError: Python's ValueError / TypeError,
//                          and RuntimeError as well (gloo raises RuntimeError for them)
//   a failed collective    c10::DistBackendError (torch.distributed.DistBackendError)
//   the network failed     c10::DistNetworkError (torch.distributed.DistNetworkError)
//   a timeout              DistTimeoutError: a DistBackendError (and Python's TimeoutError)
//
// The torch-free layers throw zcoll::Error and its subclasses (util/error.h); asTorchError()
// converts them where they leave zcoll: a Work's error, a failed group creation.
#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace zcoll {

class ArgumentError : public c10::ValueError {
 public:
  using c10::ValueError::ValueError;
};

class ArgumentTypeError : public c10::TypeError {
 public:
  using c10::TypeError::TypeError;
};

class DistTimeoutError : public c10::DistBackendError {
 public:
  using c10::DistBackendError::DistBackendError;
};

// `error` as one of torch's distributed errors: zcoll::TimeoutError becomes DistTimeoutError,
// zcoll::NetworkError DistNetworkError, torch's distributed errors stay as they are, anything
// else becomes DistBackendError with the same message.
std::exception_ptr asTorchError(const std::exception_ptr& error);

// What `e` says, without the C++ backtrace c10 errors carry.
std::string errorMessage(const std::exception& e);

}  // namespace zcoll

// ZCOLL_CHECK_ARG(cond, "message parts", ...): a bad argument (zcoll.ArgumentError in Python).
#define ZCOLL_CHECK_ARG(cond, ...) ZCOLL_THROW_UNLESS(::zcoll::ArgumentError, cond, __VA_ARGS__)

// ZCOLL_CHECK_ARG_TYPE(cond, ...): an argument of a type zcoll cannot take (zcoll.ArgumentTypeError).
#define ZCOLL_CHECK_ARG_TYPE(cond, ...) ZCOLL_THROW_UNLESS(::zcoll::ArgumentTypeError, cond, __VA_ARGS__)

#define ZCOLL_THROW_UNLESS(type, cond, ...)                                                    \
  do {                                                                                         \
    if (C10_UNLIKELY(!(cond)))                                                                 \
      throw type({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, ::c10::str(__VA_ARGS__)); \
  } while (0)
