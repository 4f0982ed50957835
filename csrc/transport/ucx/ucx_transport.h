// UCX transport (docs/ucx.md): ranks on any hosts over whatever fabric UCX finds (InfiniBand and
// RoCE verbs, tcp, shared memory, cma), loaded at run time (transport/ucx/ucx_library.h).
#pragma once

#include <memory>
#include <string>

#include "transport/transport.h"

namespace zcoll {

// Whether this build of zcoll holds the UCX transport (UCX's headers were found at build time).
bool ucxBuilt();

// The UCX library's version ("1.22.0") once loaded from `library` (TransportOptions::ucxLibrary);
// Error naming what to install when it cannot be loaded or this build has no UCX transport.
std::string ucxVersion(const std::string& library);

std::unique_ptr<Transport> makeUcxTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options);

}  // namespace zcoll
