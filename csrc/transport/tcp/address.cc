#include "transport/tcp/address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace zcoll::tcp {

std::string Endpoint::str() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Endpoint Endpoint::parse(const std::string& s, const std::string& ctx) {
  Endpoint e;
  size_t colon;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    ZCOLL_CHECK_AS(NetworkError, close != std::string::npos && close + 1 < s.size() && s[close + 1] == ':', ctx,
                   "bad address '", s, "' in the store");
    e.host = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    ZCOLL_CHECK_AS(NetworkError, colon != std::string::npos && colon > 0, ctx, "bad address '", s, "' in the store");
    e.host = s.substr(0, colon);
  }
  e.port = std::atoi(s.c_str() + colon + 1);
  ZCOLL_CHECK_AS(NetworkError, e.port > 0 && e.port < 65536, ctx, "bad port in address '", s, "' in the store");
  return e;
}

sockaddr_storage socketAddress(const std::string& host, int port, const std::string& ctx, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  ZCOLL_CHECK_AS(NetworkError, rc == 0 && res != nullptr, ctx, "cannot resolve '", host, "': ",
                 rc == 0 ? "no address" : gai_strerror(rc));
  sockaddr_storage a{};
  std::memcpy(&a, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  if (a.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(static_cast<uint16_t>(port));
  else reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

std::string hostText(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
  else inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  return buf;
}

bool isLoopback(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  return host == "localhost";
}

std::vector<Interface> interfaces() {
  std::vector<Interface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || !(a->ifa_flags & IFF_UP)) continue;
    const int family = a->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    if (family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr)) continue;
    sockaddr_storage s{};
    std::memcpy(&s, a->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    out.push_back({a->ifa_name, hostText(s), family, (a->ifa_flags & IFF_LOOPBACK) != 0});
  }
  freeifaddrs(list);
  return out;
}

InterfaceSpec InterfaceSpec::parse(const std::string& spec) {
  InterfaceSpec s;
  size_t at = 0;
  if (at < spec.size() && spec[at] == '^') s.exclude = true, ++at;
  if (at < spec.size() && spec[at] == '=') s.exact = true, ++at;
  while (at <= spec.size()) {
    const size_t comma = std::min(spec.find(',', at), spec.size());
    std::string name = spec.substr(at, comma - at);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (!name.empty()) s.names.push_back(name);
    at = comma + 1;
  }
  return s;
}

bool InterfaceSpec::matches(const std::string& name) const {
  bool listed = false;
  for (const auto& n : names) listed = listed || (exact ? name == n : name.rfind(n, 0) == 0);
  return exclude ? !listed : listed;
}

namespace {

std::string describe(const std::vector<Interface>& ifs) {
  std::string s;
  for (const auto& i : ifs) s += (s.empty() ? "" : ", ") + i.name + "=" + i.address;
  return s.empty() ? "none" : s;
}

// The first interface address `accept` takes, of `preferFamily` first (AF_INET unless AF_INET6).
template <typename Accept>
const Interface* firstOf(const std::vector<Interface>& ifs, int preferFamily, Accept accept) {
  const int first = preferFamily == AF_INET6 ? AF_INET6 : AF_INET;
  for (int family : {first, first == AF_INET ? AF_INET6 : AF_INET})
    for (const auto& i : ifs)
      if (i.family == family && accept(i)) return &i;
  return nullptr;
}

}  // namespace

AddressChoice chooseAddress(const std::vector<Interface>& ifs, const std::string& ifnameSpec,
                            const std::string& routeAddress, bool remotePeers, int preferFamily,
                            const std::string& ctx) {
  // Container and VM bridges reach only this host; like NCCL, never pick them unasked.
  const InterfaceSpec usable = InterfaceSpec::parse("^docker,virbr");
  const Interface* reachable = firstOf(ifs, preferFamily, [&](const Interface& i) {
    return !i.loopback && usable.matches(i.name);
  });
  if (!ifnameSpec.empty()) {
    const InterfaceSpec spec = InterfaceSpec::parse(ifnameSpec);
    const Interface* i = firstOf(ifs, preferFamily, [&](const Interface& i) { return spec.matches(i.name); });
    ZCOLL_CHECK_AS(NetworkError, i != nullptr, ctx, "no interface matches ZCOLL_SOCKET_IFNAME=", ifnameSpec,
                   " (this host has ", describe(ifs), ")");
    ZCOLL_CHECK_AS(NetworkError, !(i->loopback && remotePeers), ctx, "ZCOLL_SOCKET_IFNAME=", ifnameSpec,
                   " selects the loopback interface ", i->name, " (", i->address,
                   "), which ranks on other hosts cannot reach; name an interface they can reach (this host has ",
                   describe(ifs), ")");
    return {i->address, "interface " + i->name + " (ZCOLL_SOCKET_IFNAME=" + ifnameSpec + ")"};
  }
  if (!routeAddress.empty() && (!isLoopback(routeAddress) || !remotePeers))
    return {routeAddress, "the local address that routes to the store's host"};
  if (reachable != nullptr) return {reachable->address, "interface " + reachable->name + " (the first usable one)"};
  ZCOLL_CHECK_AS(NetworkError, !remotePeers, ctx, "this host has no address that ranks on other hosts can reach (",
                 describe(ifs), "); set ZCOLL_SOCKET_IFNAME to the interface they can reach");
  const Interface* lo = firstOf(ifs, preferFamily, [](const Interface& i) { return i.loopback; });
  return {lo ? lo->address : "127.0.0.1", "loopback (every peer is on this host)"};
}

std::string routeAddressTo(const std::string& host) {
  if (host.empty()) return "";
  try {
    socklen_t len = 0;
    const sockaddr_storage to = socketAddress(host, 9, "", &len);  // any non-zero port will do
    const int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "";
    sockaddr_storage local{};
    socklen_t localLen = sizeof local;
    const bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&to), len) == 0 &&
                    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &localLen) == 0;
    close(fd);
    return ok ? hostText(local) : "";
  } catch (const NetworkError&) {
    return "";
  }
}

AddressChoice advertisedAddress(const TransportOptions& options, bool remotePeers, const std::string& ctx) {
  const std::string route = routeAddressTo(options.storeHost);
  const int family = options.socketFamily ? options.socketFamily
                     : route.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  return chooseAddress(interfaces(), options.socketIfname, route, remotePeers && !options.hostOf.empty(), family, ctx);
}

}  // namespace zcoll::tcp
