// UCX loaded at run time (docs/ucx.md): zcoll compiles against UCX's headers (the libucx wheel's
// or a system UCX's) but never links libucp, so the base install runs without UCX, and a cluster
// points zcoll at its own UCX (built with verbs) by path. Only the functions below are used; each
// is looked up by name in the library that was opened.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

namespace zcoll::ucx {

// The functions zcoll calls, as pointers into the loaded libucp (and the libucs it depends on).
struct Api {
  decltype(&::ucp_get_version) get_version;
  decltype(&::ucp_get_version_string) get_version_string;
  decltype(&::ucp_config_read) config_read;
  decltype(&::ucp_config_modify) config_modify;
  decltype(&::ucp_config_release) config_release;
  decltype(&::ucp_init_version) init_version;
  decltype(&::ucp_cleanup) cleanup;
  decltype(&::ucp_worker_create) worker_create;
  decltype(&::ucp_worker_destroy) worker_destroy;
  decltype(&::ucp_worker_get_address) worker_get_address;
  decltype(&::ucp_worker_release_address) worker_release_address;
  decltype(&::ucp_worker_progress) worker_progress;
  decltype(&::ucp_worker_get_efd) worker_get_efd;
  decltype(&::ucp_worker_arm) worker_arm;
  decltype(&::ucp_ep_create) ep_create;
  decltype(&::ucp_ep_close_nbx) ep_close_nbx;
  decltype(&::ucp_tag_send_nbx) tag_send_nbx;
  decltype(&::ucp_tag_recv_nbx) tag_recv_nbx;
  decltype(&::ucp_request_check_status) request_check_status;
  decltype(&::ucp_request_cancel) request_cancel;
  decltype(&::ucp_request_free) request_free;
  decltype(&::ucs_status_string) status_string;

  std::string path;     // what was opened
  std::string version;  // "1.22.0"
};

// The process's UCX, opened on first use from `path` (a libucp file, a directory holding one,
// or "" for the loader's search path) and kept for the life of the process. A later call with
// another path gets the UCX already loaded (one UCX per process); Error when it cannot be
// loaded, naming what to install or set.
const Api& load(const std::string& path);

// "Input/output error" for a status.
std::string statusText(const Api& api, ucs_status_t status);

// A UCP context shared by every group of the process (reading UCX's configuration and loading
// its transports takes tens of milliseconds); each group makes its own worker on it. Released
// with the last group that holds it.
class Context {
 public:
  explicit Context(const Api& api);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ucp_context_h get() const { return context_; }
  const Api& api() const { return api_; }

  static std::shared_ptr<Context> shared(const Api& api);

 private:
  const Api& api_;
  ucp_context_h context_ = nullptr;
};

}  // namespace zcoll::ucx
