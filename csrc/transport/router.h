// The "auto" transport (docs/multi-host.md): one Transport facade over a transport per peer,
// shared memory to the ranks on this host and the network transport (tcp or UCX, options.net) to
// the ranks on other hosts, so every schedule runs unchanged on any topology.
#pragma once

#include <memory>
#include <string>

#include "transport/topology.h"
#include "transport/transport.h"

namespace zcoll {

// A transport per peer by options.hostOf: ranks on one host only -> shm; one rank per host -> the
// network transport; else the router. `name()` says which ("shm+tcp" / "shm+ucx" for the router).
std::unique_ptr<Transport> makeAutoTransport(Store& store, const std::string& prefix, int rank, int size,
                                             const TransportOptions& options);

// The transports of a transport per peer: this host's (shm, numbering this host's ranks from 0;
// null when the rank is alone on its host) and the network's (group ranks). Both null for any
// other transport.
struct PerPeer {
  Transport* local = nullptr;
  Transport* network = nullptr;
};
PerPeer perPeer(Transport& t);

}  // namespace zcoll
