// Which ranks share a host (docs/multi-host.md): computed once per group from each rank's host
// index (the backend gathers host identities through the store), used to pick a transport per
// peer and the hierarchical schedules.
#pragma once

#include <string>
#include <vector>

namespace zcoll {

class Topology {
 public:
  // hostOf[r]: rank r's host, numbered from 0 in order of each host's lowest rank. Empty: every
  // rank on one host.
  Topology(int size, std::vector<int> hostOf, std::vector<std::string> hostNames = {});

  int size() const { return static_cast<int>(hostOf_.size()); }
  int hosts() const { return static_cast<int>(ranksOf_.size()); }
  int hostOf(int rank) const { return hostOf_[rank]; }
  const std::vector<int>& ranksOn(int host) const { return ranksOf_[host]; }
  int localIndex(int rank) const { return localIndex_[rank]; }
  bool sameHost(int a, int b) const { return hostOf_[a] == hostOf_[b]; }
  // More than one host, and some host with more than one rank: two levels to schedule.
  bool twoLevel() const;
  // Every host has as many ranks.
  bool even() const;
  // The largest host's rank count: a host's share of a tensor is at least 1/this of it.
  size_t mostRanksOnAHost() const;
  // "host-a" (or "host 1" when names are unknown).
  std::string hostName(int host) const;
  // "2 hosts x 2 ranks (host-a: 0,1; host-b: 2,3)".
  std::string describe() const;
  const std::vector<int>& hostOfEachRank() const { return hostOf_; }

 private:
  std::vector<int> hostOf_, localIndex_;
  std::vector<std::vector<int>> ranksOf_;
  std::vector<std::string> names_;
};

}  // namespace zcoll
