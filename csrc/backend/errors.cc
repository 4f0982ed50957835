#include "backend/errors.h"

#include "util/error.h"

namespace zcoll {

std::exception_ptr asTorchError(const std::exception_ptr& error) {
  if (!error) return error;
  const c10::SourceLocation where{__func__, __FILE__, static_cast<uint32_t>(__LINE__)};
  try {
    std::rethrow_exception(error);
  } catch (const TimeoutError& e) {
    return std::make_exception_ptr(DistTimeoutError(where, e.what()));
  } catch (const NetworkError& e) {
    return std::make_exception_ptr(c10::DistNetworkError(where, e.what()));
  } catch (const c10::DistError&) {
    return error;
  } catch (const c10::Error& e) {
    return std::make_exception_ptr(c10::DistBackendError(where, e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return std::make_exception_ptr(c10::DistBackendError(where, e.what()));
  } catch (...) {
    return std::make_exception_ptr(c10::DistBackendError(where, "zcoll: unknown error"));
  }
}

std::string errorMessage(const std::exception& e) {
  const auto* c10Error = dynamic_cast<const c10::Error*>(&e);
  return c10Error ? c10Error->what_without_backtrace() : e.what();
}

}  // namespace zcoll
