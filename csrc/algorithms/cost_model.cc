#include "algorithms/cost_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "kernels/cpu/reduce_cpu.h"
#include "transport/tag.h"

namespace zcoll {

const char* collectiveName(Collective c) {
  switch (c) {
    case Collective::kAllReduce: return "allreduce";
    case Collective::kReduce: return "reduce";
    case Collective::kReduceScatter: return "reduce_scatter";
  }
  return "?";
}

namespace {
constexpr size_t KiB = 1024, MiB = 1024 * KiB;
}  // namespace

// Each number below is fitted to the measurements that set the old threshold table (2-core VM,
// ranks unbound, bench/ and tests/; docs/architecture.md lists them), so that the model's
// choices at those points are the table's (tests/test_tuner.py checks them):
//   shm, 4 ranks (2 per core): all-reduce 64 KiB ring 131 us, two-shot 100, one-shot 170;
//        1 MiB ring 487, two-shot 674. The ring's 6 steps give alpha + switchCost = 17.8 us and
//        beta = gamma = 6.2 GB/s per rank at 2 ranks per core (12.4 GB/s on a core of one's
//        own); two-shot's 2 rounds of 3 messages cost 62 us (sigma = 0.37) and its bytes 1.6x
//        the ring's (kappa = 0.46: three streams into a rank at once thrash what two cores share).
//   shm, 2 ranks: 4 KiB all-reduce 9 us in place, mostly the call's own overhead: alpha =
//        1.5 us. One-shot / two-shot 64 KiB 17.8 / 25.1 us, 256 KiB 44.5 / 62.4, 512 KiB 87 / 83
//        (rings only), 4 MiB 1008 / 698: a gathering round's copy into place costs like a
//        reduction, and one-shot from max_chunk pays an uncached pass (one-shot to 512 KiB).
//   tcp (loopback), 3 ranks: 4 KiB ring 135 us (4 steps: alpha + switchCost/2 = 33.8 us),
//        one-shot 74 (sigma = 0.9), tree 106; 8 ranks: 4 KiB tree 329 (7 latencies: alpha +
//        3 switchCost = 47 us), one-shot 377; 64 KiB tree 447, two-shot 737.
//   The network's beta (2 GB/s) and kappa (0.2) are not pinned by a measurement: they keep the
//   8-rank 64 KiB tree ahead and give large messages to the ring, as the table did. gamma is the
//   CPU's, as over shm.
//   Codec rates: bench/codec_throughput.py, 64 MiB float32 (docs/compression.md).
// cores = 2: the machine measured. Another machine's numbers come from ZCOLL_TUNING=measure or
// a tuning file (python -m zcoll.tune).
CostModel CostModel::defaults() {
  CostModel m;
  m.shm.alpha = 1.5e-6;
  m.shm.beta = 12.4e9;
  m.shm.gamma = 12.4e9;
  m.shm.sigma = 0.37;
  m.shm.kappa = 0.46;
  m.shm.switchCost = 16.3e-6;
  m.shm.overlap = 0.0;
  m.shm.maxChunk = 1 * MiB;  // measured best for 2 ranks (1 MiB over 256 and 512 KiB); a quarter ring
  m.net.alpha = 31.1e-6;
  m.net.beta = 2.0e9;
  m.net.gamma = 12.4e9;
  m.net.sigma = 0.9;
  m.net.kappa = 0.2;
  m.net.switchCost = 5.3e-6;
  m.net.overlap = 1.0;
  m.net.maxChunk = 4 * MiB;
  m.cores = 2;
  using kernels::Codec;
  m.codecs[static_cast<size_t>(Codec::kFp16)] = {6.2e9, 6.1e9};
  m.codecs[static_cast<size_t>(Codec::kBf16)] = {7.4e9, 6.2e9};
  m.codecs[static_cast<size_t>(Codec::kInt8)] = {3.5e9, 7.5e9};
  m.codecs[static_cast<size_t>(Codec::kInt4)] = {3.1e9, 5.7e9};
  m.source = "defaults";
  return m;
}

const LinkCost& CostModel::link(const std::string& transport) const { return transport == "shm" ? shm : net; }

std::string CostModel::invalid() const {
  char buf[160];
  auto bad = [&](const char* field, const char* rule, double v) {
    std::snprintf(buf, sizeof buf, "%s must be %s, got %g", field, rule, v);
    return std::string(buf);
  };
  const std::pair<const char*, const LinkCost*> links[] = {{"shm", &shm}, {"net", &net}};
  for (const auto& [name, l] : links) {
    const std::string n(name);
    const auto check = [&](const char* f, double v, bool ok, const char* rule) {
      return ok && std::isfinite(v) ? std::string() : bad((n + "." + f).c_str(), rule, v);
    };
    for (const std::string& e : {check("alpha", l->alpha, l->alpha >= 0, "a number of seconds >= 0"),
                                 check("beta", l->beta, l->beta > 0, "positive (bytes/s)"),
                                 check("gamma", l->gamma, l->gamma > 0, "positive (bytes/s)"),
                                 check("sigma", l->sigma, l->sigma >= 0, ">= 0"),
                                 check("kappa", l->kappa, l->kappa >= 0, ">= 0"),
                                 check("switch", l->switchCost, l->switchCost >= 0, "a number of seconds >= 0"),
                                 check("overlap", l->overlap, l->overlap >= 0 && l->overlap <= 1, "in [0, 1]"),
                                 check("max_chunk", static_cast<double>(l->maxChunk), l->maxChunk >= 4096,
                                       "at least 4096 (bytes)")})
      if (!e.empty()) return e;
  }
  if (cores < 1) return bad("cores", "at least 1", cores);
  static const char* const names[] = {"fp16", "bf16", "int8", "int4"};
  for (size_t i = 0; i < codecs.size(); ++i) {
    const std::string n = std::string("codecs.") + names[i];
    if (!(codecs[i].encode > 0) || !std::isfinite(codecs[i].encode))
      return bad((n + ".encode").c_str(), "positive (bytes/s)", codecs[i].encode);
    if (!(codecs[i].decode > 0) || !std::isfinite(codecs[i].decode))
      return bad((n + ".decode").c_str(), "positive (bytes/s)", codecs[i].decode);
  }
  return "";
}

std::vector<double> CostModel::toVector() const {
  std::vector<double> v;
  for (const LinkCost* l : {&shm, &net})
    v.insert(v.end(), {l->alpha, l->beta, l->gamma, l->sigma, l->kappa, l->switchCost, l->overlap,
                       static_cast<double>(l->maxChunk)});
  v.push_back(cores);
  for (const CodecCost& c : codecs) v.insert(v.end(), {c.encode, c.decode});
  return v;
}

void CostModel::fromVector(const std::vector<double>& v) {
  ZCOLL_CHECK(v.size() == toVector().size(), "zcoll: a cost model of ", v.size(), " numbers");
  size_t i = 0;
  for (LinkCost* l : {&shm, &net}) {
    l->alpha = v[i++];
    l->beta = v[i++];
    l->gamma = v[i++];
    l->sigma = v[i++];
    l->kappa = v[i++];
    l->switchCost = v[i++];
    l->overlap = v[i++];
    l->maxChunk = static_cast<size_t>(v[i++]);
  }
  cores = static_cast<int>(v[i++]);
  for (CodecCost& c : codecs) {
    c.encode = v[i++];
    c.decode = v[i++];
  }
}

std::string CostModel::describe() const {
  std::string out;
  char buf[200];
  const std::pair<const char*, const LinkCost*> links[] = {{"shm", &shm}, {"net", &net}};
  for (const auto& [name, l] : links) {
    std::snprintf(buf, sizeof buf,
                  "%s%s: alpha %.3g us, beta %.3g GB/s, gamma %.3g GB/s, sigma %.2g, kappa %.2g, switch %.3g us, "
                  "overlap %.2g, max chunk %zu",
                  out.empty() ? "" : "; ", name, l->alpha * 1e6, l->beta / 1e9, l->gamma / 1e9, l->sigma, l->kappa,
                  l->switchCost * 1e6, l->overlap, l->maxChunk);
    out += buf;
  }
  return out + "; " + std::to_string(cores) + " cores per host";
}

const Prediction* Predictions::find(Algorithm algo) const {
  for (int i = 0; i < count; ++i)
    if (candidates[static_cast<size_t>(i)].algorithm == algo) return &candidates[static_cast<size_t>(i)];
  return nullptr;
}

// ---- the formulas -------------------------------------------------------------------------------
//
// Notation: p ranks, n bytes, s = n/p a rank's segment, c the chunk, m = ceil(x/c) the chunks
// of x bytes. A link's effective numbers where q = max(1, ranksPerHost/cores) ranks share each
// core: a = alpha + switchCost (q-1), B = beta/q, G = gamma/q (cores are time-shared).
//
// round(k, x, compute): k concurrent messages of x bytes each, in chunks, and `compute`
// seconds of local work on what arrives (reduction, codecs):
//   m (1 + sigma (k-1)) a  +  k x (1 + kappa (k-1)) / B  +  compute  -  overlap (1 - 1/m) min(wire, compute)
// so chunking pays one latency per chunk and, where the link overlaps (overlap > 0), hides the
// shorter of moving and computing all but one chunk's worth: the tuner's chunk trade-off.
namespace {

struct Effective {
  double a, B, G, sigma, kappa, overlap, q;
  size_t maxChunk;
};

Effective effective(const CostModel& m, const LinkCost& l, int ranksPerHost) {
  const double q = std::max(1.0, static_cast<double>(ranksPerHost) / std::max(1, m.cores));
  return {l.alpha + l.switchCost * (q - 1), l.beta / q, l.gamma / q, l.sigma, l.kappa, l.overlap, q, l.maxChunk};
}

double chunksOf(double x, double c) { return x > 0 && c > 0 ? std::max(1.0, std::ceil(x / c)) : 1.0; }

double round(const Effective& e, int k, double x, double c, double compute) {
  const double m = chunksOf(x, c);
  const double kk = std::max(1, k);
  const double latency = m * (1 + e.sigma * (kk - 1)) * e.a;
  const double wire = kk * x * (1 + e.kappa * (kk - 1)) / e.B;
  const double hidden = e.overlap * (1 - 1 / m) * std::min(wire, compute);
  return latency + wire + compute - hidden;
}

int depth(int p) {  // a binary heap of p ranks has floor(log2 p) levels below its root
  int d = 0;
  while ((2 << d) <= p) ++d;
  return d;
}

// All-reduce, p >= 2. What a rank receives in a gathering round it copies into place (out of
// the ring, or out of the sender's memory): a pass over the bytes like a reduction's, at G.
// One-shot takes in and reduces the whole tensor at once; from the link's largest chunk on,
// that no longer stays in cache and every byte costs a further pass (2 ranks, one-shot against
// two-shot: 512 KiB 87 against 83 us, 4 MiB 1008 against 698).
double ringAllReduce(const Effective& e, int p, double n, double c) {
  const double s = n / p;
  return (p - 1) * (round(e, 1, s, c, s / e.G) + round(e, 1, s, c, s / e.G));
}
double twoShotAllReduce(const Effective& e, int p, double n, double c) {
  const double s = n / p;
  return round(e, p - 1, s, c, (p - 1) * s / e.G) + round(e, p - 1, s, c, (p - 1) * s / e.G);
}
double oneShotAllReduce(const Effective& e, int p, double n) {
  const double uncached = n >= static_cast<double>(e.maxChunk) ? (p - 1) * n / e.B : 0;
  return round(e, p - 1, n, n, (p - 1) * n / e.G) + uncached;
}
// Two heaps, one per half of the tensor (tree.cc): the first chunk goes up d levels and down d
// (plus one latency, fitted: a rank is inner node of one tree and leaf of the other); after it,
// each chunk costs what the busiest rank does per chunk: as inner node a round of two receives
// (and their reduction) and a round of two sends, as a leaf one send and one receive.
double treeAllReduce(const Effective& e, int p, double n, double c) {
  const double half = n / 2, cc = half > 0 ? std::min(c, half) : 1, chunks = chunksOf(half, cc);
  const int d = depth(p);
  const double hop = e.a + cc / e.B;
  const double fill = (2 * d + 1) * hop + d * 3 * cc / e.G;
  const double pair = (1 + e.sigma) * e.a + 2 * cc * (1 + e.kappa) / e.B;
  const double perChunk = 2 * pair + 2 * hop + 3 * cc / e.G;  // two reduced, one copied into place
  return fill + (chunks - 1) * perChunk;
}
// Reduce to a root through one heap (tree.cc): d levels of latency for the first chunk, then
// the busiest inner node's round of (up to) two receives, their reduction and its send.
double treeReduce(const Effective& e, int p, double n, double c) {
  const double cc = n > 0 ? std::min(c, n) : 1, chunks = chunksOf(n, cc);
  const int d = depth(p), kids = std::min(2, p - 1);
  const double fill = d * (e.a + cc / e.B + kids * cc / e.G);
  const double perChunk = (1 + e.sigma * (kids - 1)) * e.a + kids * cc * (1 + e.kappa * (kids - 1)) / e.B +
                          kids * cc / e.G + (p > 2 ? e.a + cc / e.B : 0);
  return fill + (chunks - 1) * perChunk;
}
double oneShotReduce(const Effective& e, int p, double n, double c) {
  return round(e, p - 1, n, c, (p - 1) * n / e.G);
}
double ringReduceScatter(const Effective& e, int p, double n, double c) {
  const double s = n / p;
  return (p - 1) * round(e, 1, s, c, s / e.G);
}
double twoShotReduceScatter(const Effective& e, int p, double n, double c) {
  const double s = n / p;
  return round(e, p - 1, s, c, (p - 1) * s / e.G);
}

// Compressed all-reduce over float32 (compressed.cc), r = encoded / float32 bytes, E and D the
// codec's rates on a shared core. Ring: every hop decodes, adds and re-encodes its segment; the
// gather moves encoded segments, which every rank decodes. Two-shot: each rank encodes the p-1
// segments it sends, the owner decodes and sums p-1 of them and encodes once, the gather as the
// ring's but in one round.
double compressedRing(const Effective& e, const CodecCost& codec, double r, int p, double n, double c) {
  const double s = n / p, E = codec.encode / e.q, D = codec.decode / e.q;
  const double hop = s / D + s / e.G + s / E;  // the first hop also encodes the sender's own segment
  return round(e, 1, s * r, c * r, s / E + hop) + (p - 2) * round(e, 1, s * r, c * r, hop) +
         (p - 1) * round(e, 1, s * r, c * r, s / D) + s / D;
}
double compressedTwoShot(const Effective& e, const CodecCost& codec, double r, int p, double n, double c) {
  const double s = n / p, E = codec.encode / e.q, D = codec.decode / e.q;
  // (the owner's encode pipelines with the arrivals, chunk by chunk: at 2 ranks this is the ring)
  return round(e, p - 1, s * r, c * r, (p - 1) * s * (1 / E + 1 / D + 1 / e.G) + s / E) +
         round(e, p - 1, s * r, c * r, (p - 1) * s / D) + s / D;
}

// 64 KiB, 128 KiB, ..., 4 MiB, up to the link's largest.
template <typename Fn>
Prediction bestChunk(Algorithm algo, const Effective& e, Fn cost) {
  Prediction best{algo, 64 * KiB, cost(64.0 * KiB)};
  for (size_t c = 128 * KiB; c <= 4 * MiB && c <= e.maxChunk; c *= 2) {
    const double t = cost(static_cast<double>(c));
    if (t < best.seconds) best = {algo, c, t};  // ties: the smaller chunk
  }
  return best;
}

int ranksOnHost(int ranks, int ranksPerHost) { return ranksPerHost > 0 ? ranksPerHost : ranks; }

Prediction evaluate(const Effective& e, Collective c, Algorithm algo, size_t bytes, int p) {
  const double n = static_cast<double>(bytes);
  if (p < 2) return {algo, algo == Algorithm::kOneShot ? std::max<size_t>(bytes, 1) : 1 * MiB, 0.0};
  switch (c) {
    case Collective::kAllReduce:
      switch (algo) {
        case Algorithm::kOneShot: return {algo, std::max<size_t>(bytes, 1), oneShotAllReduce(e, p, n)};
        case Algorithm::kTwoShot: return bestChunk(algo, e, [&](double ch) { return twoShotAllReduce(e, p, n, ch); });
        case Algorithm::kTree: return bestChunk(algo, e, [&](double ch) { return treeAllReduce(e, p, n, ch); });
        default: return bestChunk(algo, e, [&](double ch) { return ringAllReduce(e, p, n, ch); });
      }
    case Collective::kReduce:
      if (algo == Algorithm::kOneShot)
        return bestChunk(algo, e, [&](double ch) { return oneShotReduce(e, p, n, ch); });
      return bestChunk(algo, e, [&](double ch) { return treeReduce(e, p, n, ch); });
    case Collective::kReduceScatter:
      if (algo == Algorithm::kTwoShot)
        return bestChunk(algo, e, [&](double ch) { return twoShotReduceScatter(e, p, n, ch); });
      return bestChunk(algo, e, [&](double ch) { return ringReduceScatter(e, p, n, ch); });
  }
  return {algo, 1 * MiB, 0.0};
}

}  // namespace

Prediction predictOne(const CostModel& m, Collective c, Algorithm algo, size_t bytes, int ranks,
                      const std::string& transport, int ranksPerHost) {
  return evaluate(effective(m, m.link(transport), ranksOnHost(ranks, ranksPerHost)), c, algo, bytes, ranks);
}

Predictions predict(const CostModel& m, Collective c, size_t bytes, int ranks, const std::string& transport,
                    int ranksPerHost) {
  // Candidates in order of preference on equal predictions (at 2 ranks two-shot and the ring
  // are the same exchange; the first listed is named).
  static const Algorithm allReduce[] = {Algorithm::kOneShot, Algorithm::kTwoShot, Algorithm::kRing, Algorithm::kTree};
  static const Algorithm reduce[] = {Algorithm::kTree, Algorithm::kOneShot};
  static const Algorithm reduceScatter[] = {Algorithm::kTwoShot, Algorithm::kRing};
  const Algorithm* list = c == Collective::kAllReduce ? allReduce : c == Collective::kReduce ? reduce : reduceScatter;
  const int n = c == Collective::kAllReduce ? 4 : 2;
  const Effective e = effective(m, m.link(transport), ranksOnHost(ranks, ranksPerHost));
  Predictions out;
  for (int i = 0; i < n; ++i) {
    out.candidates[static_cast<size_t>(i)] = evaluate(e, c, list[i], bytes, ranks);
    if (out.candidates[static_cast<size_t>(i)].seconds < out.candidates[static_cast<size_t>(out.best)].seconds)
      out.best = i;
  }
  out.count = n;
  return out;
}

Predictions predictCompressed(const CostModel& m, kernels::Codec codec, size_t bytes, int ranks,
                              const std::string& transport, int block, int ranksPerHost, bool errorBound) {
  const Effective e = effective(m, m.link(transport), ranksOnHost(ranks, ranksPerHost));
  const CodecCost& cc = m.codecs[static_cast<size_t>(codec)];
  // Wire bytes per float32 byte, blocks' scales included.
  const size_t sample = std::max<size_t>(static_cast<size_t>(block), 1) * 64;
  const double r = static_cast<double>(kernels::encodedBytes(codec, sample, block)) / (4.0 * sample);
  const double n = static_cast<double>(bytes);
  const int p = ranks;
  auto one = [&](Algorithm algo) {
    if (p < 2) return Prediction{algo, 1 * MiB, 0.0};
    return bestChunk(algo, e, [&](double ch) {
      return algo == Algorithm::kRing ? compressedRing(e, cc, r, p, n, ch) : compressedTwoShot(e, cc, r, p, n, ch);
    });
  };
  Predictions out;
  // The ring's error grows with every re-encoding hop (docs/compression.md: int8 at 4 ranks
  // 1.58e-2 against two-shot's 1.31e-2; int4's ring 0.29 against 0.24): there two-shot is the
  // only schedule the tuner takes, and the model picks its chunk.
  const bool twoShotOnly = errorBound && (p >= 4 || codec == kernels::Codec::kInt4);
  if (twoShotOnly) {
    out.candidates[0] = one(Algorithm::kTwoShot);
    out.count = 1;
    return out;
  }
  out.candidates[0] = one(Algorithm::kRing);  // first: at 2 ranks the two cost the same
  out.candidates[1] = one(Algorithm::kTwoShot);
  out.count = 2;
  out.best = out.candidates[1].seconds < out.candidates[0].seconds ? 1 : 0;
  return out;
}

double predictAllGather(const CostModel& m, size_t bytes, int ranks, size_t chunkBytes, const std::string& transport,
                        int ranksPerHost) {
  if (ranks < 2) return 0;
  const Effective e = effective(m, m.link(transport), ranksOnHost(ranks, ranksPerHost));
  const double s = static_cast<double>(bytes) / ranks;
  return (ranks - 1) * round(e, 1, s, static_cast<double>(chunkBytes), 0);
}

// ---- agreement and measurement ------------------------------------------------------------------

namespace {

uint64_t tuneTag(uint32_t step, uint32_t index) {
  return packTag({OpCode::kTune, kNoRedOp, DType::kUInt8, 0, step, index});
}

enum Step : uint32_t { kWarmSmall, kWarmLarge, kSmall, kLarge, kReport, kModel };

void sendDoubles(Transport& t, int peer, uint32_t step, std::vector<double> v, Deadline deadline) {
  t.wait(t.isend(peer, tuneTag(step, 0), v.data(), v.size() * sizeof(double)), deadline);
}

std::vector<double> recvDoubles(Transport& t, int peer, uint32_t step, size_t count, Deadline deadline) {
  std::vector<double> v(count);
  t.wait(t.irecv(peer, tuneTag(step, 0), v.data(), count * sizeof(double)), deadline);
  return v;
}

// `iters` round trips of `bytes` with `peer`; the initiator returns each one's duration / 2.
std::vector<double> pingPong(Transport& t, int peer, bool initiator, size_t bytes, int iters, uint32_t step,
                             Deadline deadline) {
  std::vector<char> out(std::max<size_t>(bytes, 1)), in(out.size());
  std::vector<double> half;
  for (int i = 0; i < iters; ++i) {
    const uint64_t tag = tuneTag(step, static_cast<uint32_t>(i));
    if (initiator) {
      const auto start = Clock::now();
      const RequestId r = t.irecv(peer, tag, in.data(), bytes);
      t.wait(t.isend(peer, tag, out.data(), bytes), deadline);
      t.wait(r, deadline);
      half.push_back(std::chrono::duration<double>(Clock::now() - start).count() / 2);
    } else {
      t.wait(t.irecv(peer, tag, in.data(), bytes), deadline);
      t.wait(t.isend(peer, tag, out.data(), bytes), deadline);
    }
  }
  return half;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// alpha and beta of the link between `a` (initiator) and `b`, on the initiator; {0, 0} elsewhere.
std::pair<double, double> measureLink(Transport& t, int a, int b, size_t probeBytes, Deadline deadline) {
  const int r = t.rank();
  if (r != a && r != b) return {0, 0};
  const int peer = r == a ? b : a;
  const bool initiator = r == a;
  pingPong(t, peer, initiator, 8, 2, kWarmSmall, deadline);  // first messages set up rings and buffers
  pingPong(t, peer, initiator, probeBytes, 1, kWarmLarge, deadline);
  const double alpha = median(pingPong(t, peer, initiator, 8, 16, kSmall, deadline));
  const double large = median(pingPong(t, peer, initiator, probeBytes, 4, kLarge, deadline));
  if (!initiator) return {0, 0};
  const double wire = large - alpha;
  return {alpha, wire > 0 ? static_cast<double>(probeBytes) / wire : 0};
}

// The reduction rate of this core: float32 sums of two `bytes` operands, the best of a few.
double measureGamma(size_t bytes) {
  const size_t n = bytes / sizeof(float);
  std::vector<float> x(n, 1.0f), y(n, 2.0f);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const void* srcs[2] = {x.data(), y.data()};
    const auto start = Clock::now();
    kernels::cpu::reduceSources(DType::kFloat32, RedOp::kSum, srcs, 2, x.data(), n);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (s > 0 && (best == 0 || s < best)) best = s;
  }
  return best > 0 ? static_cast<double>(bytes) / best : 0;
}

}  // namespace

bool agreeCostModel(Transport& t, CostModel& model, Deadline deadline) {
  const std::vector<double> mine = model.toVector();
  if (t.size() < 2) return false;
  if (t.rank() == 0) {
    std::vector<RequestId> sends;
    for (int q = 1; q < t.size(); ++q) sends.push_back(t.isend(q, tuneTag(kModel, 0), mine.data(), mine.size() * sizeof(double)));
    for (RequestId s : sends) t.wait(s, deadline);
    return false;
  }
  const std::vector<double> group = recvDoubles(t, 0, kModel, mine.size(), deadline);
  model.fromVector(group);
  return group != mine;
}

CostModel measureCostModel(Transport& t, const Topology& topo, const CostModel& base, Deadline deadline,
                           Measurement* report, size_t probeBytes) {
  const auto start = Clock::now();
  const int p = t.size(), r = t.rank();
  const std::string kind = t.name();
  const bool router = kind.rfind("shm+", 0) == 0;
  // One pair per link kind; every rank computes the same pairs from the topology.
  int shmA = -1, shmB = -1, netA = -1, netB = -1;
  if (p >= 2 && kind == "shm") {
    shmA = 0, shmB = 1;
  } else if (p >= 2 && !router) {
    netA = 0, netB = 1;
  } else if (p >= 2) {
    for (int h = 0; h < topo.hosts() && shmA < 0; ++h)
      if (topo.ranksOn(h).size() >= 2) shmA = topo.ranksOn(h)[0], shmB = topo.ranksOn(h)[1];
    if (topo.hosts() >= 2) netA = 0, netB = topo.ranksOn(1)[0];
  }
  CostModel m = base;
  Measurement found;
  // shm first, then the network; each pair's initiator reports to rank 0 if it is another rank.
  const std::pair<int, int> pairs[] = {{shmA, shmB}, {netA, netB}};
  for (int k = 0; k < 2; ++k) {
    const auto [a, b] = pairs[k];
    if (a < 0) continue;
    auto [alpha, beta] = measureLink(t, a, b, probeBytes, deadline);
    if (a != 0 && r == a) sendDoubles(t, 0, kReport, {alpha, beta}, deadline);
    if (a != 0 && r == 0) {
      const std::vector<double> v = recvDoubles(t, a, kReport, 2, deadline);
      alpha = v[0], beta = v[1];
    }
    if (r == 0) {
      LinkCost& l = k == 0 ? m.shm : m.net;
      if (alpha > 0) l.alpha = alpha;
      if (beta > 0) l.beta = beta;
      (k == 0 ? found.shm : found.net) = alpha > 0;
    }
  }
  if (r == 0) {
    const double gamma = measureGamma(probeBytes);
    if (gamma > 0) m.shm.gamma = m.net.gamma = gamma;
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0) m.cores = static_cast<int>(cores);
  }
  // Rank 0's numbers everywhere, with what it measured.
  std::vector<double> v = m.toVector();
  const size_t numbers = v.size();
  v.insert(v.end(), {found.shm ? 1.0 : 0.0, found.net ? 1.0 : 0.0});
  if (r == 0) {
    std::vector<RequestId> sends;
    for (int q = 1; q < p; ++q) sends.push_back(t.isend(q, tuneTag(kModel, 0), v.data(), v.size() * sizeof(double)));
    for (RequestId s : sends) t.wait(s, deadline);
  } else {
    v = recvDoubles(t, 0, kModel, v.size(), deadline);
    found.shm = v[numbers] != 0, found.net = v[numbers + 1] != 0;
  }
  v.resize(numbers);
  m.fromVector(v);
  m.source = "measured";
  found.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (report) *report = found;
  return m;
}

}  // namespace zcoll
