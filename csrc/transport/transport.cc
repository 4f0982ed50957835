#include "transport/transport.h"

#include "transport/router.h"
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"

namespace zcoll {

std::unique_ptr<Transport> makeTransport(const std::string& kind, Store& store, const std::string& prefix,
                                         int rank, int size, const TransportOptions& options) {
  ZCOLL_CHECK(size >= 1 && rank >= 0 && rank < size, "rank ", rank, " is not in a group of ", size);
  if (kind == "shm") return makeShmTransport(store, prefix, rank, size, options);
  if (kind == "tcp") return makeTcpTransport(store, prefix, rank, size, options);
  if (kind == "auto") return makeAutoTransport(store, prefix, rank, size, options);
  ZCOLL_CHECK(false, "unknown transport '", kind, "' (ZCOLL_TRANSPORT takes auto, shm or tcp)");
  return nullptr;
}

}  // namespace zcoll
