// Addresses for the tcp transport (docs/multi-host.md): IPv4 and IPv6 endpoints as published in
// the store, the host's interfaces, NCCL-style interface selection (ZCOLL_SOCKET_IFNAME), and the
// choice of the one address a rank advertises to its peers.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

#include "transport/transport.h"

namespace zcoll::tcp {

// A numeric IPv4 or IPv6 address and a port. Published in the store as "1.2.3.4:5" or
// "[fd00::1]:5".
struct Endpoint {
  std::string host;  // numeric, without brackets
  int port = 0;
  std::string str() const;
  // Throws NetworkError (prefixed by ctx) on a malformed value.
  static Endpoint parse(const std::string& s, const std::string& ctx);
};

// `host` (numeric, or a name resolved through getaddrinfo; IPv4 or IPv6) and `port` as a socket
// address; its family is in ss_family. Throws NetworkError naming `host` when it cannot resolve.
sockaddr_storage socketAddress(const std::string& host, int port, const std::string& ctx, socklen_t* len);

// The numeric text of a socket address's host part.
std::string hostText(const sockaddr_storage& a);

bool isLoopback(const std::string& numericHost);

// One address of one network interface of this host.
struct Interface {
  std::string name;     // "eth0"
  std::string address;  // numeric
  int family = 0;       // AF_INET or AF_INET6
  bool loopback = false;
};

// The addresses of the interfaces that are up, IPv4 and IPv6 (link-local IPv6 left out: it needs
// a scope id a peer cannot use), in the kernel's order.
std::vector<Interface> interfaces();

// NCCL_SOCKET_IFNAME's syntax: a comma-separated list of name prefixes ("eth,ib"); "=" before
// the list makes the names exact ("=eth0"), "^" makes it an exclusion list ("^docker,lo").
struct InterfaceSpec {
  bool exclude = false, exact = false;
  std::vector<std::string> names;
  static InterfaceSpec parse(const std::string& spec);
  bool matches(const std::string& name) const;
};

// What the tcp transport advertises, and why (for ZCOLL_DEBUG and error messages).
struct AddressChoice {
  std::string address;
  std::string reason;
};

// The address to advertise to peers (docs/multi-host.md, "Addresses"):
// 1. ZCOLL_SOCKET_IFNAME (`ifnameSpec`) set: the first address of the first matching interface;
// 2. else the local address that routes to the store's host (`routeAddress`, "" if unknown),
//    unless it is loopback while some peer is on another host;
// 3. else the first address of an interface that is not loopback nor docker or virbr (a bridge
//    to local containers), IPv4 before IPv6 unless `preferFamily` is AF_INET6;
// 4. else loopback, when no peer is on another host.
// Never a loopback address when `remotePeers`: throws NetworkError naming what to set instead.
AddressChoice chooseAddress(const std::vector<Interface>& ifs, const std::string& ifnameSpec,
                            const std::string& routeAddress, bool remotePeers, int preferFamily,
                            const std::string& ctx);

// The source address the kernel would use to reach `host` (connecting a UDP socket sends
// nothing; it only runs the route lookup), or "" when there is no route.
std::string routeAddressTo(const std::string& host);

// chooseAddress for a rank with these options: routes to options.storeHost, prefers the family
// of options.socketFamily (else the store host's); `remotePeers`: some peer is on another host.
AddressChoice advertisedAddress(const TransportOptions& options, bool remotePeers, const std::string& ctx);

}  // namespace zcoll::tcp
