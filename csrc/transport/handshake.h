// Who may join a group's connections (docs/failures.md, "Trust"). The store is the trust root,
// as in torch: rank 0 draws a random secret per group and publishes it there, and every
// connection a group makes (the tcp transport's, the liveness channels') opens with a Hello that
// carries it, both ways. The acceptor serves connections concurrently, each with a short
// deadline to say hello, so a stranger (a port scanner, a health check, another job, garbage)
// is dropped and logged and never stalls or kills the group's bootstrap; a second connection
// claiming a rank that is already connected is refused.
//
// The secret itself travels, not a proof of it: zcoll's links carry tensors in clear, so whoever
// can read a hello can read and alter the data anyway; the secret keeps out everyone who can
// reach a port but cannot read the store (docs/failures.md explains the choice).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "transport/tcp/socket.h"
#include "transport/transport.h"

namespace zcoll {

// The group's secret: rank 0 draws it from the kernel's random source and publishes it under
// `key`; the other ranks wait for it.
Secret groupSecret(Store& store, const std::string& key, int rank, Deadline deadline, Rendezvous& rendezvous);

// What this end of a connection says and expects: the kind of connection (`magic`: the tcp
// transport's and the liveness channels' differ), the group (a hash of its store prefix, so a
// connection meant for another group is told apart in messages) and the secret.
struct HelloSpec {
  uint64_t magic;
  uint64_t group;
  Secret secret;
  int rank, size;
};

// The dialing side: says hello to rank `to` (right after connecting) ...
void sendHello(int fd, const HelloSpec& me, int to, Deadline deadline, const std::string& ctx,
               const tcp::Interrupt& interrupt);
// ... and later reads the reply, which proves the other end is rank `peer` of this group.
void expectReply(int fd, const HelloSpec& me, int peer, Deadline deadline, const std::string& ctx,
                 const tcp::Interrupt& interrupt);

// The accepting side: serves connections on `listeners` until every rank r with expected[r] has
// connected once with a valid hello (it is answered and its socket is returned at [r]). Each
// connection has `helloTimeout` to say hello; strangers are dropped and logged on stderr.
// TimeoutError at `deadline` names the ranks that never connected.
std::vector<tcp::Fd> acceptPeers(const std::vector<int>& listeners, const HelloSpec& me,
                                 const std::vector<bool>& expected, Deadline deadline,
                                 std::chrono::milliseconds helloTimeout, const std::string& ctx,
                                 const tcp::Interrupt& interrupt);

// How long a new connection may take to say hello before it is dropped as a stranger.
constexpr auto kHelloTimeout = std::chrono::seconds(10);

// A hash of a store prefix (HelloSpec::group).
uint64_t groupHash(const std::string& prefix);

}  // namespace zcoll
