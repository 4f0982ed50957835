#include "algorithms/compressed.h"

#include <algorithm>
#include <vector>

#include "algorithms/schedule.h"
#include "kernels/codec_device.h"
#include "kernels/cpu/codec_cpu.h"
#include "primitives/codec_wire.h"
#include "primitives/compressed_ring.h"
#include "util/error.h"

namespace zcoll {
namespace {

using kernels::Codec;

using primitives::Wire;

size_t chunkElemsFor(const CollectiveArgs& a, size_t align) {
  return std::max(align, a.chunkBytes / sizeof(float) / align * align);
}

// Every owner's encoded segment gathered into `wire` (the encoded segments back to back, owner
// r's already in place) by a ring, or directly, of byte segments.
void gatherWire(Transport& t, const std::vector<Segment>& segs, const Wire& w, uint8_t* wire, const CollectiveArgs& a,
                uint32_t firstStep, bool direct) {
  const int p = t.size();
  std::vector<size_t> b(p), e(p);
  for (int s = 0; s < p; ++s) {
    b[s] = s ? e[s - 1] : 0;
    e[s] = b[s] + w.bytes(segs[s].size());
  }
  CollectiveArgs bytesArgs = a;
  bytesArgs.dtype = DType::kUInt8;  // the wire moves as bytes; the tag keeps the op
  if (direct) schedule::directAllGather(t, wire, b.data(), e.data(), bytesArgs, firstStep);
  else schedule::ringAllGather(t, wire, b.data(), e.data(), bytesArgs, firstStep);
}

size_t wireOffset(const std::vector<Segment>& segs, const Wire& w, int seg) {
  size_t at = 0;
  for (int s = 0; s < seg; ++s) at += w.bytes(segs[s].size());
  return at;
}

// gatherWire, then every rank, the owner too, decodes every segment into x.
void gatherEncoded(Transport& t, float* x, const std::vector<Segment>& segs, const Wire& w, uint8_t* wire,
                   const CollectiveArgs& a, uint32_t firstStep, bool direct) {
  gatherWire(t, segs, w, wire, a, firstStep, direct);
  for (int s = 0; s < t.size(); ++s) w.decode(wire + wireOffset(segs, w, s), segs[s].size(), x + segs[s].begin);
}

// Two-shot's first exchange, for one pair of ranks: this rank's stage-0 encoding of segment s
// (at `from`) goes to its owner s, and rank q's encoding of our segment lands at `into`; chunk
// by chunk, the same messages from the host and the staged schedule.
void exchangeContribution(Transport& t, const CollectiveArgs& a, const Wire& w, const std::vector<Segment>& segs,
                          int s, const uint8_t* from, int q, uint8_t* into, std::vector<RequestId>& sends,
                          std::vector<RequestId>& recvs) {
  schedule::forEachChunk(0, segs[s].size(), w.chunkElems, [&](size_t off, size_t m, size_t c) {
    sends.push_back(t.isend(s, a.tag(0, c), from + w.offset(off), w.bytes(m)));
  });
  schedule::forEachChunk(0, segs[t.rank()].size(), w.chunkElems, [&](size_t off, size_t m, size_t c) {
    recvs.push_back(t.irecv(q, a.tag(0, c), into + w.offset(off), w.bytes(m)));
  });
}

// Two-shot, pipelined chunk by chunk: every receive is posted first; each chunk of a
// contribution is sent to its owner as soon as it is encoded (chunk c to every owner before chunk
// c+1, so all owners start together); the owner sums a chunk as soon as every contribution to it
// is in, encodes the sum and sends each gather message to every rank as soon as the bytes it
// covers are encoded; and the owners' gathered segments are decoded as their messages arrive.
// The messages and their tags are those of exchangeContribution and gatherWire (the staged
// schedule's), and every value is encoded and decoded as in the unpipelined order: the same bits.
void compressedTwoShot(Transport& t, float* x, const CollectiveArgs& a, const Wire& w,
                       const std::vector<Segment>& segs, bool gather) {
  const int p = t.size(), r = t.rank();
  const Segment mine = segs[r];
  std::vector<size_t> segAt(p + 1, 0);  // segment s's encoding starts segAt[s] bytes into a wire
  for (int s = 0; s < p; ++s) segAt[s + 1] = segAt[s] + w.bytes(segs[s].size());
  const size_t total = segAt[p], own = segAt[r], mineBytes = w.bytes(mine.size());
  std::vector<uint8_t> contributions(total);  // our stage-0 encodings of the other segments
  std::vector<uint8_t> wire(gather ? total : 0);  // every owner's encoded sum (gather stage)
  std::vector<uint8_t> incoming(static_cast<size_t>(p) * mineBytes);  // slot q: rank q's encoding of ours
  CollectiveArgs bytesArgs = a;
  bytesArgs.dtype = DType::kUInt8;  // the gather moves as bytes (gatherWire's messages)
  const size_t gatherChunk = schedule::chunkElems(bytesArgs);

  std::vector<std::vector<RequestId>> contributionRecvs(p), gatherRecvs(p);
  std::vector<RequestId> sends;
  for (int k = 1; k < p; ++k) {
    const int q = (r + p - k) % p;
    schedule::forEachChunk(0, mine.size(), w.chunkElems, [&](size_t off, size_t m, size_t c) {
      contributionRecvs[q].push_back(
          t.irecv(q, a.tag(0, c), incoming.data() + q * mineBytes + w.offset(off), w.bytes(m)));
    });
    if (gather)
      schedule::forEachChunk(0, w.bytes(segs[q].size()), gatherChunk, [&](size_t off, size_t n, size_t c) {
        gatherRecvs[q].push_back(t.irecv(q, bytesArgs.tag(1, c), wire.data() + segAt[q] + off, n));
      });
  }
  // Contributions: chunk c of every other segment, encoded (stage 0) and sent at once.
  size_t mostChunks = 0;
  for (const auto& s : segs) mostChunks = std::max(mostChunks, (s.size() + w.chunkElems - 1) / w.chunkElems);
  for (size_t c = 0; c < mostChunks; ++c)
    for (int k = 1; k < p; ++k) {
      const int s = (r + k) % p;
      const size_t off = c * w.chunkElems;
      if (off >= segs[s].size()) continue;
      const size_t m = std::min(w.chunkElems, segs[s].size() - off);
      uint8_t* out = contributions.data() + segAt[s] + w.offset(off);
      w.encode(x, segs[s].begin + off, m, r, 0, out);
      sends.push_back(t.isend(s, a.tag(0, c), out, w.bytes(m)));
    }

  // The owner sums v_0 + v_1 + ... + v_{p-1} in rank order, its own part exact, chunk by chunk
  // and, inside a chunk, tile by tile: each contribution's tile is decoded, added and, once the
  // sum is complete, encoded (and decoded back into x: our own result) while it is in cache.
  const size_t tileElems = w.tileElems();
  std::vector<float> acc(tileElems), decoded(tileElems);
  const float divisor = static_cast<float>(a.avgDivisor(p));  // 0: not AVG
  size_t gatherSent = 0;  // our gather messages sent so far
  schedule::forEachChunk(0, mine.size(), w.chunkElems, [&](size_t off, size_t m, size_t c) {
    for (int q = 0; q < p; ++q)
      if (q != r) t.wait(contributionRecvs[q][c], a.deadline);
    for (size_t at = 0; at < m; at += tileElems) {  // `at` is whole blocks: byte offsets add up
      const size_t n = std::min(tileElems, m - at);
      float* ownTile = x + mine.begin + off + at;
      for (int q = 0; q < p; ++q) {
        const float* v = ownTile;
        if (q != r) {
          w.decode(incoming.data() + q * mineBytes + w.offset(off) + w.bytes(at), n, decoded.data());
          v = decoded.data();
        }
        if (q == 0) std::copy(v, v + n, acc.data());
        else
          for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + v[i];
      }
      if (divisor != 0.0f)
        for (size_t i = 0; i < n; ++i) acc[i] = acc[i] / divisor;
      if (!gather) {  // reduce-scatter: the owner keeps the float32 sum (x_r's tile is consumed)
        std::copy(acc.begin(), acc.begin() + n, ownTile);
        continue;
      }
      uint8_t* encoded = wire.data() + own + w.offset(off) + w.bytes(at);
      w.encodeValues(acc.data(), mine.begin + off + at, n, r, kernels::kGatherStage, encoded,
                     divisor != 0.0f ? divisor : 1.0f);
      w.decode(encoded, n, ownTile);
    }
    if (!gather) return;
    // Every gather message whose bytes are now encoded goes to every rank.
    const size_t ready = w.offset(off) + w.bytes(m);
    for (; gatherSent * gatherChunk < mineBytes; ++gatherSent) {
      const size_t begin = gatherSent * gatherChunk, end = std::min(begin + gatherChunk, mineBytes);
      if (end > ready) break;
      for (int k = 1; k < p; ++k)
        sends.push_back(t.isend((r + k) % p, bytesArgs.tag(1, gatherSent), wire.data() + own + begin, end - begin));
    }
  });
  if (gather)  // every other owner's segment, decoded chunk by chunk as its messages arrive
    for (int k = 1; k < p; ++k) {
      const int q = (r + k) % p;
      const uint8_t* segWire = wire.data() + segAt[q];
      size_t arrived = 0, message = 0;
      schedule::forEachChunk(0, segs[q].size(), w.chunkElems, [&](size_t off, size_t m, size_t) {
        const size_t end = w.offset(off) + w.bytes(m);
        for (; arrived < end; ++message) {
          t.wait(gatherRecvs[q][message], a.deadline);
          arrived = std::min((message + 1) * gatherChunk, w.bytes(segs[q].size()));
        }
        w.decode(segWire + w.offset(off), m, x + segs[q].begin + off);
      });
    }
  for (RequestId s : sends) t.wait(s, a.deadline);
}

// The two-shot above for data in a device's memory: the device encodes, sums and decodes; the
// host only moves encoded bytes, as the same messages with the same tags, so the results (and a
// mixed group's traffic) are the host schedule's. Every device step is enqueued in order on the
// device's stream; the host synchronises before it sends what the device produced, and once
// more at the end so the caller gets its data back in place.
void stagedTwoShot(Transport& t, kernels::CodecDevice& dev, float* x, const CollectiveArgs& a, const Wire& w,
                   const std::vector<Segment>& segs, bool gather) {
  const int p = t.size(), r = t.rank();
  const Segment mine = segs[r];
  const size_t total = wireOffset(segs, w, p), partBytes = w.bytes(mine.size());
  uint8_t* devWire = dev.deviceBuffer(0, total);
  uint8_t* devParts = dev.deviceBuffer(1, partBytes * p);
  float* devSum = gather ? reinterpret_cast<float*>(dev.deviceBuffer(2, mine.size() * sizeof(float))) : x + mine.begin;
  uint8_t* hostWire = dev.hostBuffer(0, total);
  uint8_t* hostParts = dev.hostBuffer(1, partBytes * p);
  // Every contribution encoded once (stage 0) on the device, then to the host and its owner.
  for (int s = 0; s < p; ++s)
    if (s != r)
      dev.encode(w.params(r, 0, segs[s].begin), x + segs[s].begin, segs[s].size(), devWire + wireOffset(segs, w, s),
                 w.residual ? w.residual + segs[s].begin : nullptr, 1.0f);
  dev.copyToHost(hostWire, devWire, total);  // our own segment's bytes are not sent
  dev.synchronize();
  std::vector<RequestId> sends, recvs;
  for (int k = 1; k < p; ++k) {
    const int s = (r + k) % p, q = (r + p - k) % p;
    exchangeContribution(t, a, w, segs, s, hostWire + wireOffset(segs, w, s), q, hostParts + q * partBytes, sends,
                         recvs);
  }
  for (RequestId q : recvs) t.wait(q, a.deadline);
  // The owner's exact sum in rank order, its own part exact (decodeSumBody).
  const float divisor = static_cast<float>(a.avgDivisor(p));  // 0: not AVG
  dev.copyToDevice(devParts, hostParts, partBytes * p);
  dev.decodeSum({w.c.codec, w.c.block, devParts, partBytes, p, r, x + mine.begin, mine.size(), divisor, devSum});
  for (RequestId q : sends) t.wait(q, a.deadline);  // hostWire is about to be overwritten
  if (gather) {
    const size_t own = wireOffset(segs, w, r);
    dev.encode(w.params(r, kernels::kGatherStage, mine.begin), devSum, mine.size(), devWire + own,
               w.residual ? w.residual + mine.begin : nullptr, divisor != 0.0f ? divisor : 1.0f);
    dev.copyToHost(hostWire + own, devWire + own, partBytes);
    dev.synchronize();
    gatherWire(t, segs, w, hostWire, a, 1, true);
    dev.copyToDevice(devWire, hostWire, total);
    for (int s = 0; s < p; ++s)
      dev.decode(w.c.codec, w.c.block, devWire + wireOffset(segs, w, s), segs[s].size(), x + segs[s].begin);
  }
  dev.synchronize();
}

void checkCompression(const CollectiveArgs& a, const Compression& c) {
  ZCOLL_CHECK(a.op == RedOp::kSum || a.op == RedOp::kAvg, "only sum and avg are compressed, not ", redOpName(a.op));
  ZCOLL_CHECK(!kernels::isBlockwise(c.codec) || kernels::validBlock(c.block),
              "codec block size must be a multiple of 16 in [16, 65536], got ", c.block);
}

// Error feedback's first step: x' = x + e (float32), and fresh (zero) residuals, which the
// encodes of this rank then fill at the positions it encodes.
void applyResidual(float* x, float* residual, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    x[i] = x[i] + residual[i];
    residual[i] = 0.0f;
  }
}

std::vector<Segment> segmentsFrom(int p, const size_t* segBegin, const size_t* segEnd) {
  std::vector<Segment> segs(p);
  for (int s = 0; s < p; ++s) segs[s] = {segBegin[s], segEnd[s]};
  return segs;
}

}  // namespace

size_t compressionAlign(const Compression& c) {
  return kernels::isBlockwise(c.codec) ? static_cast<size_t>(c.block) : 32;
}

void compressedAllReduce(Transport& t, float* data, size_t count, const CollectiveArgs& a, const Compression& c,
                         Algorithm algo, float* residual) {
  ZCOLL_CHECK(algo == Algorithm::kRing || algo == Algorithm::kTwoShot, "compressed all-reduce has no ",
              algorithmName(algo), " algorithm (ring or twoshot)");
  checkCompression(a, c);
  if (residual) applyResidual(data, residual, count);
  if (t.size() == 1) return;
  const size_t align = compressionAlign(c);
  const Wire w{c, chunkElemsFor(a, align), residual};
  const auto segs = partition(count, static_cast<size_t>(t.size()), align);
  if (algo == Algorithm::kRing) primitives::runCompressedRing(t, data, a, w, segs, true);
  else compressedTwoShot(t, data, a, w, segs, true);
}

void compressedReduceScatter(Transport& t, float* data, const size_t* segBegin, const size_t* segEnd,
                             const CollectiveArgs& a, const Compression& c, Algorithm algo, float* residual) {
  ZCOLL_CHECK(algo == Algorithm::kRing || algo == Algorithm::kTwoShot, "compressed reduce_scatter has no ",
              algorithmName(algo), " algorithm (ring or twoshot)");
  checkCompression(a, c);
  if (residual) applyResidual(data, residual, segEnd[t.size() - 1]);
  if (t.size() == 1) return;
  const Wire w{c, chunkElemsFor(a, compressionAlign(c)), residual};
  const auto segs = segmentsFrom(t.size(), segBegin, segEnd);
  if (algo == Algorithm::kRing) primitives::runCompressedRing(t, data, a, w, segs, false);
  else compressedTwoShot(t, data, a, w, segs, false);
}

void compressedAllGather(Transport& t, float* data, const size_t* segBegin, const size_t* segEnd,
                         const CollectiveArgs& a, const Compression& c) {
  checkCompression(a, c);
  if (t.size() == 1) return;
  const Wire w{c, chunkElemsFor(a, compressionAlign(c))};
  const auto segs = segmentsFrom(t.size(), segBegin, segEnd);
  const int r = t.rank();
  std::vector<uint8_t> wire(wireOffset(segs, w, t.size()));
  w.encode(data, segs[r].begin, segs[r].size(), r, kernels::kGatherStage, wire.data() + wireOffset(segs, w, r));
  gatherEncoded(t, data, segs, w, wire.data(), a, 0, false);  // every rank, r too, decodes
}

void stagedCompressedAllReduce(Transport& t, kernels::CodecDevice& dev, float* data, size_t count,
                               const CollectiveArgs& a, const Compression& c, float* residual) {
  checkCompression(a, c);
  if (residual) dev.addResidual(data, residual, count);
  if (t.size() == 1) {
    dev.synchronize();
    return;
  }
  const size_t align = compressionAlign(c);
  const Wire w{c, chunkElemsFor(a, align), residual};
  stagedTwoShot(t, dev, data, a, w, partition(count, static_cast<size_t>(t.size()), align), true);
}

void stagedCompressedReduceScatter(Transport& t, kernels::CodecDevice& dev, float* data, const size_t* segBegin,
                                   const size_t* segEnd, const CollectiveArgs& a, const Compression& c,
                                   float* residual) {
  checkCompression(a, c);
  if (residual) dev.addResidual(data, residual, segEnd[t.size() - 1]);
  if (t.size() == 1) {
    dev.synchronize();
    return;
  }
  const Wire w{c, chunkElemsFor(a, compressionAlign(c)), residual};
  stagedTwoShot(t, dev, data, a, w, segmentsFrom(t.size(), segBegin, segEnd), false);
}

void stagedCompressedAllGather(Transport& t, kernels::CodecDevice& dev, float* data, const size_t* segBegin,
                               const size_t* segEnd, const CollectiveArgs& a, const Compression& c) {
  checkCompression(a, c);
  if (t.size() == 1) return;
  const Wire w{c, chunkElemsFor(a, compressionAlign(c))};
  const auto segs = segmentsFrom(t.size(), segBegin, segEnd);
  const int r = t.rank();
  const size_t total = wireOffset(segs, w, t.size()), own = wireOffset(segs, w, r);
  uint8_t* devWire = dev.deviceBuffer(0, total);
  uint8_t* hostWire = dev.hostBuffer(0, total);
  dev.encode(w.params(r, kernels::kGatherStage, segs[r].begin), data + segs[r].begin, segs[r].size(), devWire + own,
             nullptr, 1.0f);
  dev.copyToHost(hostWire + own, devWire + own, w.bytes(segs[r].size()));
  dev.synchronize();
  gatherWire(t, segs, w, hostWire, a, 0, false);  // as compressedAllGather: a ring from step 0
  dev.copyToDevice(devWire, hostWire, total);
  for (int s = 0; s < t.size(); ++s)
    dev.decode(c.codec, c.block, devWire + wireOffset(segs, w, s), segs[s].size(), data + segs[s].begin);
  dev.synchronize();
}

}  // namespace zcoll
