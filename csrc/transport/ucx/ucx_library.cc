#include "transport/ucx/ucx_library.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>

#include "util/error.h"

namespace zcoll::ucx {
namespace {

constexpr unsigned kMinMajor = 1, kMinMinor = 10;  // the *_nbx calls
constexpr const char* kInstallHint =
    "install the libucx wheel (pip install 'zcoll[ucx]', which brings libucx-cu12) or point ZCOLL_UCX_LIB "
    "at a system UCX's libucp.so (docs/ucx.md)";

bool isDirectory(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

template <typename F>
void bind(void* lib, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  ZCOLL_CHECK(fn != nullptr, "ucx: ", path, " has no ", name, " (UCX ", kMinMajor, ".", kMinMinor,
              " or later is needed); ", kInstallHint);
}

Api open(const std::string& given) {
  Api api;
  api.path = given.empty() ? "libucp.so.0" : isDirectory(given) ? given + "/libucp.so.0" : given;
  // Read when libucs loads, so set before: UCX installs handlers for SIGSEGV, SIGBUS, ... that
  // would displace the ones torch and Python (faulthandler) install, and logs to stdout, which is
  // the program's own output. Both are changed only where the user has not set them.
  ::setenv("UCX_HANDLE_ERRORS", "none", /*overwrite=*/0);
  ::setenv("UCX_LOG_FILE", "stderr", /*overwrite=*/0);
  void* lib = ::dlopen(api.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = ::dlerror();
    ZCOLL_CHECK(false, "ucx: cannot load UCX (", why ? why : api.path, "): ", kInstallHint);
  }
  bind(lib, "ucp_get_version", api.get_version, api.path);
  bind(lib, "ucp_get_version_string", api.get_version_string, api.path);
  unsigned major = 0, minor = 0, release = 0;
  api.get_version(&major, &minor, &release);
  api.version = api.get_version_string();
  ZCOLL_CHECK(major > kMinMajor || (major == kMinMajor && minor >= kMinMinor), "ucx: ", api.path, " is UCX ",
              api.version, "; zcoll needs ", kMinMajor, ".", kMinMinor, " or later: ", kInstallHint);
  bind(lib, "ucp_config_read", api.config_read, api.path);
  bind(lib, "ucp_config_modify", api.config_modify, api.path);
  bind(lib, "ucp_config_release", api.config_release, api.path);
  bind(lib, "ucp_init_version", api.init_version, api.path);
  bind(lib, "ucp_cleanup", api.cleanup, api.path);
  bind(lib, "ucp_worker_create", api.worker_create, api.path);
  bind(lib, "ucp_worker_destroy", api.worker_destroy, api.path);
  bind(lib, "ucp_worker_get_address", api.worker_get_address, api.path);
  bind(lib, "ucp_worker_release_address", api.worker_release_address, api.path);
  bind(lib, "ucp_worker_progress", api.worker_progress, api.path);
  bind(lib, "ucp_worker_get_efd", api.worker_get_efd, api.path);
  bind(lib, "ucp_worker_arm", api.worker_arm, api.path);
  bind(lib, "ucp_ep_create", api.ep_create, api.path);
  bind(lib, "ucp_ep_close_nbx", api.ep_close_nbx, api.path);
  bind(lib, "ucp_tag_send_nbx", api.tag_send_nbx, api.path);
  bind(lib, "ucp_tag_recv_nbx", api.tag_recv_nbx, api.path);
  bind(lib, "ucp_request_check_status", api.request_check_status, api.path);
  bind(lib, "ucp_request_cancel", api.request_cancel, api.path);
  bind(lib, "ucp_request_free", api.request_free, api.path);
  bind(lib, "ucs_status_string", api.status_string, api.path);  // libucs, found through libucp
  return api;  // the library stays open for the life of the process
}

std::mutex mu;  // guards the two below
std::unique_ptr<Api> loaded;
std::weak_ptr<Context> sharedContext;

}  // namespace

const Api& load(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu);
  if (!loaded) loaded = std::make_unique<Api>(open(path));
  return *loaded;
}

std::string statusText(const Api& api, ucs_status_t status) { return api.status_string(status); }

Context::Context(const Api& api) : api_(api) {
  ucp_config_t* config = nullptr;
  ucs_status_t s = api.config_read(nullptr, nullptr, &config);  // UCX_* from the environment
  ZCOLL_CHECK(s == UCS_OK, "ucx: reading UCX's configuration (UCX_* variables) failed: ", statusText(api, s));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // groups' workers run on their own threads
  s = api.init_version(UCP_API_MAJOR, UCP_API_MINOR, &params, config, &context_);
  api.config_release(config);
  ZCOLL_CHECK(s == UCS_OK, "ucx: ucp_init failed: ", statusText(api, s),
              " (check UCX_TLS and UCX_NET_DEVICES: docs/ucx.md)");
}

Context::~Context() {
  if (context_) api_.cleanup(context_);
}

std::shared_ptr<Context> Context::shared(const Api& api) {
  std::lock_guard<std::mutex> lock(mu);
  auto context = sharedContext.lock();
  if (!context) {
    context = std::make_shared<Context>(api);
    sharedContext = context;
  }
  return context;
}

}  // namespace zcoll::ucx
