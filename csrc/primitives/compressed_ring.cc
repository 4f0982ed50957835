#include "primitives/compressed_ring.h"

#include <algorithm>

#include "algorithms/schedule.h"

namespace zcoll::primitives {
namespace {

class CompressedRing {
 public:
  CompressedRing(Transport& t, float* x, const CollectiveArgs& a, const Wire& w, const std::vector<Segment>& segs,
                 bool gather)
      : t_(t), x_(x), a_(a), w_(w), segs_(segs), gather_(gather), p_(t.size()), r_(t.rank()),
        next_((r_ + 1) % p_), prev_((r_ + p_ - 1) % p_), segAt_(p_ + 1, 0), tile_(w.tileElems()),
        rsSends_(p_ - 1), rsRecvs_(p_ - 1), agRecvs_(p_ - 1) {
    size_t maxSeg = 0;
    for (int s = 0; s < p_; ++s) {
      maxSeg = std::max(maxSeg, segs[s].size());
      segAt_[s + 1] = segAt_[s] + w.bytes(segs[s].size());
    }
    // Reduce-scatter hops alternate between two send and two receive buffers: hop k sends from
    // send[k % 2] and receives into recv[k % 2]; `wire` holds every owner's encoded segment.
    for (int i = 0; i < 2; ++i) {
      send_[i].resize(w.bytes(maxSeg));
      recv_[i].resize(w.bytes(maxSeg));
    }
    wire_.resize(gather ? segAt_[p_] : 0);
  }

  void run() {
    const Segment first = rsSendSeg(0);
    postRsRecvs(0);
    forEachChunk(first, [&](size_t off, size_t m, size_t c) { encodeSend(first, off, m, c); });
    const int hops = p_ - 1;
    for (int k = 0; k < hops; ++k) {
      const bool owner = k == hops - 1;
      if (!owner) postRsRecvs(k + 1);
      else if (gather_) postAgRecvs(0);
      const Segment in = rsRecvSeg(k);
      forEachChunk(in, [&](size_t off, size_t m, size_t c) {
        t_.wait(rsRecvs_[k][c], a_.deadline);  // chunk c is in; c+1 keeps moving while we work on this one
        if (!owner) {
          // Its send buffer's last message (hop k-1's chunk c, where that segment had one) has gone.
          if (k > 0 && c < rsSends_[k - 1].size()) t_.wait(rsSends_[k - 1][c], a_.deadline);
          recvDecodeReduceEncodeSend(k, in, off, m, c);
        } else if (gather_) {
          recvDecodeReduceEncodeCopySend(k, in, off, m, c);
        } else {
          recvDecodeReduce(k, in, off, m);
        }
      });
    }
    if (gather_)
      for (int j = 0; j < hops; ++j) {
        const bool last = j == hops - 1;
        if (!last) postAgRecvs(j + 1);
        const Segment in = agRecvSeg(j);
        forEachChunk(in, [&](size_t off, size_t m, size_t c) {
          t_.wait(agRecvs_[j][c], a_.deadline);
          recvCopyDecode(j, in, off, m, c, !last);
        });
      }
    for (const auto& hop : rsSends_)
      for (RequestId q : hop) t_.wait(q, a_.deadline);
    for (RequestId q : agSends_) t_.wait(q, a_.deadline);
  }

 private:
  // Reduce-scatter hop k sends segment r-k-1 and receives r-k-2 (what it receives is what the
  // next hop sends); the owner of a segment receives it last. All-gather step j sends segment
  // r-j (step 0: our own) and receives r-j-1.
  Segment rsSendSeg(int k) const { return segs_[schedule::mod(r_ - k - 1, p_)]; }
  Segment rsRecvSeg(int k) const { return segs_[schedule::mod(r_ - k - 2, p_)]; }
  int agRecvIndex(int j) const { return schedule::mod(r_ - j - 1, p_); }
  Segment agRecvSeg(int j) const { return segs_[agRecvIndex(j)]; }
  uint64_t rsTag(int k, size_t c) const { return a_.tag(static_cast<uint32_t>(k), static_cast<uint32_t>(c)); }
  uint64_t agTag(int j, size_t c) const { return a_.tag(kGatherSteps + static_cast<uint32_t>(j), static_cast<uint32_t>(c)); }

  template <typename Fn>
  void forEachChunk(const Segment& s, Fn fn) const {
    schedule::forEachChunk(0, s.size(), w_.chunkElems, fn);
  }

  void postRsRecvs(int k) {
    forEachChunk(rsRecvSeg(k), [&](size_t off, size_t m, size_t c) {
      rsRecvs_[k].push_back(t_.irecv(prev_, rsTag(k, c), recv_[k % 2].data() + w_.offset(off), w_.bytes(m)));
    });
  }
  void postAgRecvs(int j) {
    const int s = agRecvIndex(j);
    forEachChunk(segs_[s], [&](size_t off, size_t m, size_t c) {
      agRecvs_[j].push_back(t_.irecv(prev_, agTag(j, c), wire_.data() + segAt_[s] + w_.offset(off), w_.bytes(m)));
    });
  }

  // Segment `seg` starts at rank seg+1 with E_{seg+1,0}(x_{seg+1}).
  void encodeSend(const Segment& seg, size_t off, size_t m, size_t c) {
    uint8_t* out = send_[0].data() + w_.offset(off);
    w_.encode(x_, seg.begin + off, m, r_, 0, out);
    rsSends_[0].push_back(t_.isend(next_, rsTag(0, c), out, w_.bytes(m)));
  }

  // At hop k (k+1 hops from where the segment started) acc = D(in) + x, re-encoded at stage k+1.
  void recvDecodeReduceEncodeSend(int k, const Segment& in, size_t off, size_t m, size_t c) {
    uint8_t* out = send_[(k + 1) % 2].data() + w_.offset(off);
    w_.decodeAddEncode(recv_[k % 2].data() + w_.offset(off), x_, in.begin + off, m, 0.0f, r_,
                       static_cast<uint32_t>(k + 1), out, 1.0f, tile_.data());
    rsSends_[k + 1].push_back(t_.isend(next_, rsTag(k + 1, c), out, w_.bytes(m)));
  }

  // The owner's hop: the sum is final (AVG divides here); its gather-stage encoding (residual
  // scaled by the divisor) starts the all-gather, and the owner too takes its decoded value.
  void recvDecodeReduceEncodeCopySend(int k, const Segment& in, size_t off, size_t m, size_t c) {
    const float divisor = ownerDivisor();
    uint8_t* out = wire_.data() + segAt_[r_] + w_.offset(off);
    w_.decodeAddEncode(recv_[k % 2].data() + w_.offset(off), x_, in.begin + off, m, divisor, r_, kernels::kGatherStage,
                       out, divisor != 0.0f ? divisor : 1.0f, tile_.data());
    agSends_.push_back(t_.isend(next_, agTag(0, c), out, w_.bytes(m)));
    w_.decode(out, m, x_ + in.begin + off);
  }

  void recvDecodeReduce(int k, const Segment& in, size_t off, size_t m) {
    const float divisor = ownerDivisor();
    w_.decodeAddEncode(recv_[k % 2].data() + w_.offset(off), x_, in.begin + off, m, divisor, r_, kernels::kGatherStage,
                       nullptr, 1.0f, tile_.data());
  }

  // All-gather step j: the chunk is in the wire already (received in place); unless this is the
  // last step it goes on first, then it is decoded.
  void recvCopyDecode(int j, const Segment& in, size_t off, size_t m, size_t c, bool send) {
    const uint8_t* chunk = wire_.data() + segAt_[agRecvIndex(j)] + w_.offset(off);
    if (send) agSends_.push_back(t_.isend(next_, agTag(j + 1, c), chunk, w_.bytes(m)));
    w_.decode(chunk, m, x_ + in.begin + off);
  }

  float ownerDivisor() const { return static_cast<float>(a_.avgDivisor(p_)); }  // 0: not AVG

  Transport& t_;
  float* x_;
  const CollectiveArgs& a_;
  const Wire& w_;
  const std::vector<Segment>& segs_;
  const bool gather_;
  const int p_, r_, next_, prev_;
  std::vector<size_t> segAt_;  // segment s's encoding starts segAt_[s] bytes into the wire
  std::vector<float> tile_;
  std::vector<uint8_t> send_[2], recv_[2], wire_;
  std::vector<std::vector<RequestId>> rsSends_, rsRecvs_, agRecvs_;
  std::vector<RequestId> agSends_;
};

}  // namespace

void runCompressedRing(Transport& t, float* x, const CollectiveArgs& a, const Wire& w, const std::vector<Segment>& segs,
                       bool gather) {
  CompressedRing(t, x, a, w, segs, gather).run();
}

}  // namespace zcoll::primitives
