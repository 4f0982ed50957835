#include "transport/topology.h"

#include <algorithm>

#include "util/error.h"

namespace zcoll {

Topology::Topology(int size, std::vector<int> hostOf, std::vector<std::string> hostNames)
    : hostOf_(hostOf.empty() ? std::vector<int>(size, 0) : std::move(hostOf)), localIndex_(size),
      names_(std::move(hostNames)) {
  ZCOLL_CHECK(static_cast<int>(hostOf_.size()) == size, "topology: ", hostOf_.size(), " host indices for ", size,
              " ranks");
  for (int r = 0; r < size; ++r) {
    const int h = hostOf_[r];
    ZCOLL_CHECK(h >= 0 && h <= static_cast<int>(ranksOf_.size()), "topology: rank ", r, " has host ", h,
                " (hosts are numbered in order of their lowest rank)");
    if (h == static_cast<int>(ranksOf_.size())) ranksOf_.emplace_back();
    localIndex_[r] = static_cast<int>(ranksOf_[h].size());
    ranksOf_[h].push_back(r);
  }
}

bool Topology::twoLevel() const {
  return hosts() > 1 && std::any_of(ranksOf_.begin(), ranksOf_.end(), [](const auto& r) { return r.size() > 1; });
}

bool Topology::even() const {
  return std::all_of(ranksOf_.begin(), ranksOf_.end(), [&](const auto& r) { return r.size() == ranksOf_[0].size(); });
}

size_t Topology::mostRanksOnAHost() const {
  size_t most = 1;
  for (const auto& ranks : ranksOf_) most = std::max(most, ranks.size());
  return most;
}

std::string Topology::hostName(int host) const {
  return host < static_cast<int>(names_.size()) && !names_[host].empty() ? names_[host]
                                                                          : "host " + std::to_string(host);
}

std::string Topology::describe() const {
  std::string s = std::to_string(hosts()) + (hosts() == 1 ? " host" : " hosts");
  s += even() ? " x " + std::to_string(ranksOf_[0].size()) + " ranks" : ", uneven";
  s += " (";
  for (int h = 0; h < hosts(); ++h) {
    s += (h ? "; " : "") + hostName(h) + ":";
    for (size_t i = 0; i < ranksOf_[h].size(); ++i) s += (i ? "," : " ") + std::to_string(ranksOf_[h][i]);
  }
  return s + ")";
}

}  // namespace zcoll
