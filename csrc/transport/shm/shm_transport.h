// Shared-memory transport: ranks on one host (docs/architecture.md, transports).
#pragma once

#include <memory>
#include <string>

#include "transport/transport.h"

namespace zcoll {

std::unique_ptr<Transport> makeShmTransport(Store& store, const std::string& prefix, int rank, int size,
                                            const TransportOptions& options);

}  // namespace zcoll
