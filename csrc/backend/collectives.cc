// The collectives of ProcessGroupZcoll: argument checks on the caller's thread, then a body that
// runs as the group's next collective (see enqueue) on the algorithms and the transport.
#include <ATen/ATen.h>
#include <c10/core/StreamGuard.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "algorithms/collective.h"
#include "backend/process_group_zcoll.h"
#include "backend/cuda_codec_device.h"
#include "backend/tensor_args.h"
#include "kernels/cpu/emulated_codec_device.h"
#include "kernels/cpu/reduce_cpu.h"

namespace zcoll {
namespace {

// The tag of a collective that moves bytes without reducing (its dtype still goes in the tag).
uint64_t copyTag(OpCode opcode, const at::Tensor& t, uint64_t seq) {
  CollectiveArgs a;
  a.opcode = opcode;
  a.dtype = toDType(t.scalar_type(), "collective");
  a.seq = seq;
  return a.tag(0, 0);
}

// The float32 copy a device-side compressed collective works on, taken now on the caller's
// stream, so it reads `t` in that stream's order; PREMUL_SUM's factor is applied first, in t's
// dtype, as on the host (round_T(x * f), arithmetic.md §3).
at::Tensor floatCopy(const DeviceStaging& s, const at::Tensor& t, double premul) {
  c10::OptionalStreamGuard guard(s.stream());
  const at::Tensor scaled = premul != 1.0 ? t.mul(premul) : t;
  return scaled.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous().view(-1);
}

// Why a list of several tensors is refused where gloo takes one per device and reduces them all.
constexpr const char* kOneTensor =
    " (several tensors per rank is torch's multi-device mode, which torch deprecated and NCCL refuses)";

// A contiguous tensor as a matrix of its dim-0 rows (a 0-dim tensor is one row), also when it
// has no rows at all: an all_to_all_single rank with nothing to send (an MoE rank without tokens).
at::Tensor asRows(const at::Tensor& t) {
  if (t.dim() == 0) return t.view({1, 1});
  int64_t width = 1;
  for (int64_t d = 1; d < t.dim(); ++d) width *= t.size(d);
  return t.view({t.size(0), width});
}

// Slice q of a flat tensor of `p` equal parts of `part` elements: [q * part, (q + 1) * part).
struct EqualSlices {
  std::vector<size_t> begin, end;
  EqualSlices(int p, size_t part) : begin(p), end(p) {
    for (int q = 0; q < p; ++q) begin[q] = q * part, end[q] = (q + 1) * part;
  }
};

}  // namespace

at::Tensor ProcessGroupZcoll::scratchCopy(const at::Tensor& t) {
  at::Tensor copy = at::from_blob(scratch_.get(std::max<size_t>(t.nbytes(), 1)), {t.numel()}, t.options());
  copy.view(t.sizes()).copy_(t);
  return copy;
}

kernels::CodecDevice& ProcessGroupZcoll::codecDeviceFor(const std::optional<c10::Stream>& stream) {
  if (!codecDevice_ || codecStream_ != stream) {
    codecDevice_ = stream ? makeCudaCodecDevice(*stream) : std::make_unique<kernels::cpu::EmulatedCodecDevice>();
    codecStream_ = stream;
  }
  return *codecDevice_;
}

// What ZCOLL_DEBUG logs for a compressed collective on a device, e.g. "allreduce/int8 on cuda:0".
std::string ProcessGroupZcoll::onDevice(const char* collective, const DeviceStaging& s) const {
  return std::string(collective) + "/" + config_.compression + " on " + s.device().str();
}

// The device-side compressed collectives run the two-shot schedule (algorithms/compressed.h,
// staged*): each of its steps is a whole-segment kernel, and only encoded bytes cross to the
// host. Everything runs on zcoll's stream (s.workStream()), after the staging's beforeRun made
// it wait for the caller's float32 copy; the staging's afterRun waits for the last of it, so the
// work completes with `out` written.
void ProcessGroupZcoll::deviceAllreduceNow(const DeviceStaging& s, const at::Tensor& input, const at::Tensor& out,
                                           RedOp op, DType dtype, uint64_t seq, const at::Tensor& residual) {
  c10::OptionalStreamGuard guard(s.workStream());
  if (getSize() > 1) {
    Compression c;
    const CollectiveArgs a = compressedArgs(OpCode::kAllReduce, dtype, op, seq, c);
    logChoice(onDevice("allreduce", s).c_str(), out.nbytes(), Algorithm::kTwoShot, false, a);
    stagedCompressedAllReduce(*transport_, codecDeviceFor(s.workStream()), input.data_ptr<float>(),
                              static_cast<size_t>(input.numel()), a, c,
                              residual.defined() ? residual.data_ptr<float>() : nullptr);
  }
  out.copy_(input.view(out.sizes()));  // float32 -> out's dtype, rounded to nearest even
}

void ProcessGroupZcoll::deviceReduceScatterNow(const DeviceStaging& s, const at::Tensor& input, const at::Tensor& out,
                                               RedOp op, DType dtype, uint64_t seq) {
  c10::OptionalStreamGuard guard(s.workStream());
  const int64_t m = out.numel();
  if (getSize() > 1) {
    Compression c;
    const CollectiveArgs a = compressedArgs(OpCode::kReduceScatter, dtype, op, seq, c);
    logChoice(onDevice("reduce_scatter", s).c_str(), input.nbytes(), Algorithm::kTwoShot, false, a);
    const EqualSlices slices(getSize(), m);
    stagedCompressedReduceScatter(*transport_, codecDeviceFor(s.workStream()), input.data_ptr<float>(),
                                  slices.begin.data(), slices.end.data(), a, c);
  }
  out.copy_(input.narrow(0, getRank() * m, m).view(out.sizes()));
}

void ProcessGroupZcoll::deviceGatherNow(const DeviceStaging& s, const at::Tensor& all, const at::Tensor& out,
                                        DType dtype, uint64_t seq) {
  c10::OptionalStreamGuard guard(s.workStream());
  Compression c;
  const CollectiveArgs a = compressedArgs(OpCode::kAllGather, dtype, RedOp::kSum, seq, c);
  logChoice(onDevice("allgather", s).c_str(), out.nbytes(), Algorithm::kRing, false, a);
  const EqualSlices slices(getSize(), static_cast<size_t>(all.numel() / getSize()));
  stagedCompressedAllGather(*transport_, codecDeviceFor(s.workStream()), all.data_ptr<float>(), slices.begin.data(),
                            slices.end.data(), a, c);
  out.copy_(all.view(out.sizes()));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allreduce(std::vector<at::Tensor>& tensors,
                                                            const c10d::AllreduceOptions& opts) {
  ZCOLL_CHECK_ARG(tensors.size() == 1, "zcoll allreduce: expects one tensor per rank, got ", tensors.size(), kOneTensor);
  at::Tensor t = tensors[0];
  if (t.defined() && t.layout() == at::kSparse) return sparseAllreduce(t, opts);
  const DType dtype = checkTensor(t, "allreduce");
  double premul = 1.0;
  const RedOp op = toRedOp(opts.reduceOp, &premul);
  checkReduceOp(dtype, op, "allreduce");
  auto staging = stagingFor({t}, "allreduce");
  if (staging && compresses("all_reduce", dtype, t.nbytes(), op)) {  // the codec work on the device
    const at::Tensor input = floatCopy(*staging, t, op == RedOp::kPremulSum ? premul : 1.0);
    return enqueue(c10d::OpType::ALLREDUCE, {t}, [this, staging, input, t, op, dtype](uint64_t seq) {
      deviceAllreduceNow(*staging, input, t, op, dtype, seq, at::Tensor());
    }, opts.asyncOp, staging);
  }
  const at::Tensor h = staging ? staging->host(t, true, true) : t;
  return enqueue(c10d::OpType::ALLREDUCE, {t},
                 [this, h, op, dtype, premul](uint64_t seq) { allreduceNow(h, op, dtype, premul, seq); }, opts.asyncOp,
                 staging);
}

// Sparse COO tensors (nn.Embedding(sparse=True) gradients under DDP), SUM only, as gloo: every
// rank all-gathers every rank's coalesced indices and values and adds the ranks' tensors in rank
// order with torch's sparse addition, so all ranks compute the same coalesced sum, which
// replaces the tensor's contents (docs/arithmetic.md, "Sparse tensors").
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::sparseAllreduce(const at::Tensor& t,
                                                                  const c10d::AllreduceOptions& opts) {
  ZCOLL_CHECK_ARG(opts.reduceOp == c10d::ReduceOp::SUM,
                  "zcoll allreduce: sparse tensors are reduced with SUM only (as in gloo)");
  ZCOLL_CHECK_ARG_TYPE(t.is_cpu(), "zcoll allreduce: sparse tensors must be on the CPU, got ", t.device());
  toDType(t.scalar_type(), "allreduce");  // a dtype zcoll moves
  const at::Tensor in = t.coalesce();      // read now, as dense inputs are
  return enqueue(c10d::OpType::ALLREDUCE, {t}, [this, t, in](uint64_t seq) {
    const int p = getSize();
    // Every rank's shape, sparse and dense dims and nnz, so that every rank sees a mismatch.
    constexpr int64_t kMeta = 4 + 64;  // nnz, sparse_dim, dense_dim, dim, sizes (torch: at most 64 dims)
    at::Tensor meta = at::zeros({kMeta}, at::kLong), metas = at::empty({p * kMeta}, at::kLong);
    int64_t* m = meta.data_ptr<int64_t>();
    m[0] = in._nnz(), m[1] = in.sparse_dim(), m[2] = in.dense_dim(), m[3] = in.dim();
    for (int64_t d = 0; d < in.dim(); ++d) m[4 + d] = in.size(d);
    gatherInto(metas, meta, seq);
    auto describe = [&](int q) {  // "shape [4, 3] (sparse_dim 1, dense_dim 1)" of rank q
      const int64_t* mq = metas.data_ptr<int64_t>() + q * kMeta;
      return c10::str("shape ", c10::IntArrayRef(mq + 4, mq[3]), " (sparse_dim ", mq[1], ", dense_dim ", mq[2], ")");
    };
    std::vector<int64_t> nnz(p);
    for (int q = 0; q < p; ++q) {
      const int64_t* mq = metas.data_ptr<int64_t>() + q * kMeta;
      nnz[q] = mq[0];
      ZCOLL_CHECK(std::equal(mq + 1, mq + kMeta, m + 1), "zcoll allreduce: rank ", getRank(), "'s sparse tensor has ",
                  describe(getRank()), ", rank ", q, "'s ", describe(q), ": sparse tensors differ across ranks");
    }
    // Rank q's indices ([sparse_dim, nnz_q]) and values ([nnz_q, dense sizes...]), gathered flat.
    const int64_t sparseDim = in.sparse_dim();
    int64_t rowElems = 1;  // values per index: the dense dimensions' elements
    for (int64_t d = sparseDim; d < in.dim(); ++d) rowElems *= in.size(d);
    auto gatherRows = [&](const at::Tensor& mine, int64_t perRow) {
      std::vector<size_t> begin(p), end(p);
      size_t total = 0;
      for (int q = 0; q < p; ++q) begin[q] = total, total += nnz[q] * perRow, end[q] = total;
      at::Tensor all = at::empty({static_cast<int64_t>(total)}, mine.options());
      all.narrow(0, begin[getRank()], mine.numel()).copy_(mine.reshape(-1));
      const CollectiveArgs a = argsFor(OpCode::kAllGather, toDType(mine.scalar_type(), "allreduce"), RedOp::kSum, seq);
      allGather(*transport_, all.data_ptr(), begin.data(), end.data(), a);
      return std::make_pair(all, begin);
    };
    // The indices go as [nnz, sparse_dim] rows so that each rank's part is contiguous.
    const auto [indices, iBegin] = gatherRows(in._indices().t().contiguous(), sparseDim);
    const auto [values, vBegin] = gatherRows(in._values().contiguous(), rowElems);
    at::Tensor sum;
    for (int q = 0; q < p; ++q) {
      std::vector<int64_t> valueShape{nnz[q]};
      for (int64_t d = sparseDim; d < in.dim(); ++d) valueShape.push_back(in.size(d));
      const at::Tensor part = at::sparse_coo_tensor(
          indices.narrow(0, iBegin[q], nnz[q] * sparseDim).view({nnz[q], sparseDim}).t(),
          values.narrow(0, vBegin[q], nnz[q] * rowElems).view(valueShape), in.sizes(), in.options());
      sum = q == 0 ? part.coalesce() : (sum + part).coalesce();  // one addition per element and rank
    }
    at::NoGradGuard noGrad;
    t.copy_(sum);
  }, opts.asyncOp);
}

void ProcessGroupZcoll::allreduceNow(const at::Tensor& t, RedOp op, DType dtype, double premul, uint64_t seq) {
  at::Tensor buf = t.contiguous();  // a non-contiguous tensor is reduced in a copy
  const size_t n = static_cast<size_t>(buf.numel());
  if (op == RedOp::kPremulSum) kernels::cpu::premultiply(dtype, buf.data_ptr(), buf.data_ptr(), n, premul);
  if (compresses("all_reduce", dtype, buf.nbytes(), op)) {
    compressedAllreduceNow(buf, op, dtype, seq);
  } else {
    CollectiveArgs a = argsFor(OpCode::kAllReduce, dtype, op, seq);
    TwoLevel levels;
    const Algorithm algo = choose(Collective::kAllReduce, buf.nbytes(), a, &levels);
    if (algo == Algorithm::kHierarchical) hierarchicalAllReduce(*transport_, topology_, buf.data_ptr(), n, a, levels);
    else allReduce(*transport_, buf.data_ptr(), n, a, algo);
  }
  if (!buf.is_same(t)) t.copy_(buf);
}

namespace {
bool compressedDType(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}
bool compressedOp(RedOp op) { return op == RedOp::kSum || op == RedOp::kAvg || op == RedOp::kPremulSum; }
std::string upper(const char* s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}
}  // namespace

// Only floating SUM/AVG/PREMUL_SUM is ever compressed, and only tensors worth it: everything
// else stays exact (docs/compression.md). Every reason is the same on every rank (the ranks pass
// the same sizes, dtypes and ops), so every rank logs the same lines.
bool ProcessGroupZcoll::compresses(const char* collective, DType dtype, size_t bytes, std::optional<RedOp> op) {
  if (!compressing_) return false;
  const bool info = log_.enabled(log::Level::kInfo);
  const std::string& codec = config_.compression;
  if (getSize() == 1) {
    if (info && firstTime("compression:world"))
      log_.info("compression ", codec, " skipped: a group of 1 rank exchanges nothing; logged once");
    return false;
  }
  if (op && !compressedOp(*op)) {
    if (info && firstTime(std::string("compression:op:") + redOpName(*op)))
      log_.info("compression ", codec, " skipped: ", collective, " with ", upper(redOpName(*op)),
                " stays exact (only SUM, AVG and PREMUL_SUM are compressed); logged once per op");
    return false;
  }
  if (!compressedDType(dtype)) {
    if (info && firstTime(std::string("compression:dtype:") + dtypeName(dtype)))
      log_.info("compression ", codec, " skipped: ", collective, " of ", dtypeName(dtype),
                " stays exact (only float32, float16 and bfloat16 are compressed); logged once per dtype");
    return false;
  }
  if (bytes < config_.compressMinBytes) {
    if (info && firstTime("compression:size"))
      log_.info("compression ", codec, " skipped: ", collective, " of ", bytes, " bytes ", dtypeName(dtype),
                " is under compress_min_bytes=", config_.compressMinBytes,
                " (set ZCOLL_COMPRESS_MIN_BYTES=0 or Options(compress_min_bytes=0) to compress every tensor); "
                "logged once");
    return false;
  }
  if (info && firstTime(std::string("compression:applied:") + collective))
    log_.info("compression ", codec, " applied: ", collective, " of ", bytes, " bytes ", dtypeName(dtype),
              op ? " " + upper(redOpName(*op)) : std::string(), " (tensors of at least compress_min_bytes=",
              config_.compressMinBytes, "); logged once per collective");
  return true;
}

void ProcessGroupZcoll::neverCompressed(const char* collective, DType dtype, std::optional<RedOp> op,
                                        const char* instead) {
  if (!compressing_ || getSize() == 1 || !log_.enabled(log::Level::kInfo)) return;
  if (!compressedDType(dtype) || (op && !compressedOp(*op))) return;  // not compressed elsewhere either
  if (firstTime(std::string("compression:collective:") + collective))
    log_.info("compression ", config_.compression, " skipped: ", collective, " is never compressed (", instead,
              "); logged once");
}

// The compressed schedules run in float32 (A(T)): a float32 tensor in place, float16/bfloat16
// through a float32 copy in the workspace, rounded once at the end as the reference does.
float* ProcessGroupZcoll::float32View(const at::Tensor& buf, DType dtype, size_t n) {
  return dtype == DType::kFloat32 ? static_cast<float*>(buf.data_ptr())
                                  : reinterpret_cast<float*>(workspace_.get(n * sizeof(float)));
}

CollectiveArgs ProcessGroupZcoll::compressedArgs(OpCode opcode, DType dtype, RedOp op, uint64_t seq,
                                                 Compression& c) {
  CollectiveArgs a = argsFor(opcode, dtype, op == RedOp::kAvg ? RedOp::kAvg : RedOp::kSum, seq);
  a.workspace = nullptr;  // holds the float32 copy
  c = compression_;
  c.step = seq;  // a fresh rounding stream per collective, the same on every rank
  return a;
}

void ProcessGroupZcoll::compressedAllreduceNow(const at::Tensor& buf, RedOp op, DType dtype, uint64_t seq,
                                               float* residual) {
  const size_t n = static_cast<size_t>(buf.numel());
  float* data = float32View(buf, dtype, n);
  if (dtype != DType::kFloat32) kernels::cpu::toFloat32(dtype, buf.data_ptr(), data, n);
  Compression c;
  CollectiveArgs a = compressedArgs(OpCode::kAllReduce, dtype, op, seq, c);
  TwoLevel levels;
  const Algorithm algo = chooseCompressed(Collective::kAllReduce, buf.nbytes(), a, &levels);
  if (algo == Algorithm::kHierarchical)
    hierarchicalCompressedAllReduce(*transport_, topology_, data, n, a, c, levels, residual);
  else
    compressedAllReduce(*transport_, data, n, a, c, algo, residual);
  if (dtype != DType::kFloat32) kernels::cpu::fromFloat32(dtype, data, buf.data_ptr(), n);
}

// Compressed all-reduce with error feedback (zcoll.hooks): `residual` is this rank's float32
// state for `t` (same element count), read and rewritten in place (arithmetic.md §6).
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allreduceWithFeedback(const at::Tensor& t, const at::Tensor& residual,
                                                                        bool average) {
  ZCOLL_CHECK_ARG(compressing_, "zcoll allreduce_with_feedback: compression is off for this group "
                  "(set zcoll.Options(compression=...) or ZCOLL_COMPRESS)");
  const DType dtype = checkTensor(t, "allreduce_with_feedback");
  ZCOLL_CHECK_ARG_TYPE(dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16,
                       "zcoll allreduce_with_feedback: compresses float32/float16/bfloat16, not ", dtypeName(dtype));
  checkTensor(residual, "allreduce_with_feedback");
  ZCOLL_CHECK_ARG(residual.scalar_type() == at::kFloat && residual.is_contiguous() && residual.numel() == t.numel(),
                  "zcoll allreduce_with_feedback: the residual must be a contiguous float32 tensor of ", t.numel(),
                  " elements");
  const RedOp op = average ? RedOp::kAvg : RedOp::kSum;
  at::Tensor tensor = t, res = residual;
  if (auto staging = stagingFor({t, residual}, "allreduce_with_feedback")) {
    const at::Tensor input = floatCopy(*staging, t, 1.0);
    return enqueue(c10d::OpType::ALLREDUCE, {tensor}, [this, staging, input, tensor, res, op, dtype](uint64_t seq) {
      deviceAllreduceNow(*staging, input, tensor, op, dtype, seq, res);
    }, true, staging);
  }
  return enqueue(c10d::OpType::ALLREDUCE, {tensor}, [this, tensor, res, op, dtype](uint64_t seq) {
    at::Tensor buf = tensor.contiguous();
    // Below the size threshold too: the caller asked for feedback, so the tensor is compressed.
    if (getSize() > 1) compressedAllreduceNow(buf, op, dtype, seq, res.data_ptr<float>());
    if (!buf.is_same(tensor)) tensor.copy_(buf);
  }, true);
}

// Each tensor is all-reduced on its own (so each equals a lone allreduce), in one work.
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                                      const c10d::AllreduceCoalescedOptions& opts) {
  double premul = 1.0;
  const RedOp op = toRedOp(opts.reduceOp, &premul);
  std::vector<DType> dtypes;
  for (const auto& t : tensors) {
    dtypes.push_back(checkTensor(t, "allreduce_coalesced"));
    checkReduceOp(dtypes.back(), op, "allreduce_coalesced");
  }
  auto staging = stagingFor(tensors, "allreduce_coalesced");
  std::vector<at::Tensor> ts = staging ? staging->host(tensors, true, true) : tensors;
  return enqueue(c10d::OpType::ALLREDUCE_COALESCED, tensors, [this, ts, dtypes, op, premul](uint64_t seq) {
    for (size_t i = 0; i < ts.size(); ++i) allreduceNow(ts[i], op, dtypes[i], premul, seq);
  }, opts.asyncOp, staging);
}

void ProcessGroupZcoll::checkSameRoot(int root, OpCode opcode, uint64_t seq, const char* op) {
  if (getSize() == 1) return;
  int64_t bounds[2] = {root, -root};  // MAX gives (highest root, -lowest root)
  const CollectiveArgs a = argsFor(opcode, DType::kInt64, RedOp::kMax, seq);
  allReduce(*transport_, bounds, 2, a,
            tune(model_, Collective::kAllReduce, sizeof bounds, getSize(), transport_->name(), ranksPerHost_).algorithm);
  ZCOLL_CHECK(bounds[0] == -bounds[1], "rank ", getRank(), ": zcoll ", op, " #", seq,
              ": the ranks passed different roots (from ", -bounds[1], " to ", bounds[0], "; this rank passed ", root,
              "): every rank must pass the same root");
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::broadcast(std::vector<at::Tensor>& tensors,
                                                            const c10d::BroadcastOptions& opts) {
  ZCOLL_CHECK_ARG(tensors.size() == 1, "zcoll broadcast: expects one tensor per rank, got ", tensors.size(), kOneTensor);
  ZCOLL_CHECK_ARG(opts.rootRank >= 0 && opts.rootRank < getSize(), "zcoll broadcast: root ", opts.rootRank,
                  " is not a rank of a group of ", getSize());
  checkTensor(tensors[0], "broadcast");
  const int root = static_cast<int>(opts.rootRank);
  auto staging = stagingFor(tensors, "broadcast");
  const at::Tensor t = staging ? staging->host(tensors[0], getRank() == root, getRank() != root) : tensors[0];
  return enqueue(c10d::OpType::BROADCAST, tensors, [this, t, root](uint64_t seq) {
    checkSameRoot(root, OpCode::kBroadcast, seq, "broadcast");
    at::Tensor buf = t.contiguous();
    const size_t bytes = buf.nbytes();
    const uint64_t tag = copyTag(OpCode::kBroadcast, buf, seq);
    const Deadline d = deadline();
    // Two levels: the root sends to one rank per other host (its leader), and each leader to
    // its host's ranks, so the tensor crosses each host's link once. One level: the root sends
    // to every rank.
    const int rank = getRank(), host = topology_.hostOf(rank);
    int from = root;
    std::vector<int> to;
    if (!topology_.twoLevel()) {
      if (rank == root)
        for (int p = 0; p < getSize(); ++p)
          if (p != root) to.push_back(p);
    } else {
      const int leader = hostLeader(topology_, host, root);  // the root, on the root's host
      if (rank != leader) from = leader;
      if (rank == leader)
        for (int p : topology_.ranksOn(host))
          if (p != rank) to.push_back(p);
      if (rank == root)
        for (int h = 0; h < topology_.hosts(); ++h)
          if (h != host) to.push_back(hostLeader(topology_, h, root));
    }
    if (rank != root) transport_->wait(transport_->irecv(from, tag, buf.data_ptr(), bytes), d);
    std::vector<RequestId> reqs;
    for (int p : to) reqs.push_back(transport_->isend(p, tag, buf.data_ptr(), bytes));
    for (RequestId r : reqs) transport_->wait(r, d);
    if (!buf.is_same(t)) t.copy_(buf);
  }, opts.asyncOp, staging);
}

// Ring all-gather of every rank's `input` into `flatOutput` (rank r's part at r * numel).
// With `mayCompress` (all_gather_into_tensor: FSDP's parameter traffic), floating tensors are
// compressed when compression is on: each rank encodes its part once, every rank decodes all.
void ProcessGroupZcoll::gatherInto(const at::Tensor& flatOutput, const at::Tensor& input, uint64_t seq,
                                   bool mayCompress) {
  const size_t part = static_cast<size_t>(input.numel());
  const int p = getSize(), r = getRank();
  const DType dtype = toDType(input.scalar_type(), "allgather");
  const EqualSlices slices(p, part);
  const at::Tensor in = input.contiguous();
  if (mayCompress && compresses("all_gather_into_tensor", dtype, flatOutput.nbytes(), std::nullopt)) {
    float* data = float32View(flatOutput, dtype, part * p);
    kernels::cpu::toFloat32(dtype, in.data_ptr(), data + r * part, part);
    Compression c;
    const CollectiveArgs a = compressedArgs(OpCode::kAllGather, dtype, RedOp::kSum, seq, c);
    const bool levels = twoLevelGather();  // encoded between hosts only
    logChoice(("allgather/" + config_.compression).c_str(), flatOutput.nbytes(),
              levels ? Algorithm::kHierarchical : Algorithm::kRing, false, a);
    if (levels) hierarchicalCompressedAllGather(*transport_, topology_, data, slices.begin.data(), slices.end.data(), a, c);
    else compressedAllGather(*transport_, data, slices.begin.data(), slices.end.data(), a, c);
    if (dtype != DType::kFloat32) kernels::cpu::fromFloat32(dtype, data, flatOutput.data_ptr(), part * p);
    return;
  }
  std::memcpy(static_cast<char*>(flatOutput.data_ptr()) + input.nbytes() * r, in.data_ptr(), input.nbytes());
  const CollectiveArgs a = argsFor(OpCode::kAllGather, dtype, RedOp::kSum, seq);
  log_.trace("allgather #", seq, ": ", flatOutput.nbytes(), " bytes ", dtypeName(dtype), ": ",
             twoLevelGather() ? "hierarchical" : "ring");
  if (twoLevelGather())  // each host's share crosses its link once
    hierarchicalAllGather(*transport_, topology_, flatOutput.data_ptr(), slices.begin.data(), slices.end.data(), a);
  else
    allGather(*transport_, flatOutput.data_ptr(), slices.begin.data(), slices.end.data(), a);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                                            std::vector<at::Tensor>& inputs,
                                                            const c10d::AllgatherOptions& opts) {
  ZCOLL_CHECK_ARG(inputs.size() == 1 && outputs.size() == 1, "zcoll allgather: expects one input and one output list");
  at::Tensor in = inputs[0];
  checkTensor(in, "allgather");
  auto outs = outputs[0];
  ZCOLL_CHECK_ARG(static_cast<int>(outs.size()) == getSize(), "zcoll allgather: output list has ", outs.size(),
                  " tensors for a group of ", getSize());
  checkMatches(outs, in, "allgather", "output", "input");
  neverCompressed("all_gather (the list form)", toDType(in.scalar_type(), "allgather"), std::nullopt,
                  "all_gather_into_tensor is");
  std::vector<at::Tensor> ins{in}, houts = outs;
  auto staging = stageCall(ins, houts, "allgather");
  return enqueue(c10d::OpType::ALLGATHER, outs,
                 [this, hin = ins[0], houts](uint64_t seq) { gatherIntoList(houts, hin, seq); }, opts.asyncOp,
                 staging);
}

void ProcessGroupZcoll::gatherIntoList(const std::vector<at::Tensor>& outs, const at::Tensor& in, uint64_t seq) {
  const int64_t n = static_cast<int64_t>(outs.size()) * in.numel();
  at::Tensor flat = at::from_blob(scratch_.get(std::max<size_t>(n * in.element_size(), 1)), {n}, in.options());
  gatherInto(flat, in, seq);
  for (size_t r = 0; r < outs.size(); ++r) outs[r].copy_(flat.narrow(0, r * in.numel(), in.numel()).view(outs[r].sizes()));
}

// torch's (deprecated) all_gather_coalesced: outputs[r][i] receives rank r's inputs[i]. The
// inputs (any shapes and dtypes) travel packed in one byte buffer: one all-gather for them all.
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                                      std::vector<at::Tensor>& inputs,
                                                                      const c10d::AllgatherOptions& opts) {
  const int p = getSize();
  ZCOLL_CHECK_ARG(static_cast<int>(outputs.size()) == p, "zcoll allgather_coalesced: ", outputs.size(),
                  " output lists for a group of ", p, " (output_tensor_lists[rank][i] receives rank's input i)");
  for (const auto& t : inputs) checkTensor(t, "allgather_coalesced");
  std::vector<at::Tensor> ins = inputs, outs;
  for (int r = 0; r < p; ++r) {
    ZCOLL_CHECK_ARG(outputs[r].size() == inputs.size(), "zcoll allgather_coalesced: output list ", r, " has ",
                    outputs[r].size(), " tensors for ", inputs.size(), " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      const at::Tensor& out = outputs[r][i];
      checkTensor(out, "allgather_coalesced");
      ZCOLL_CHECK_ARG(out.numel() == inputs[i].numel() && out.scalar_type() == inputs[i].scalar_type(),
                      "zcoll allgather_coalesced: output ", r, "[", i, "] must match input ", i, "'s size and dtype (",
                      inputs[i].numel(), " x ", inputs[i].scalar_type(), "), got ", out.numel(), " x ",
                      out.scalar_type());
    }
    outs.insert(outs.end(), outputs[r].begin(), outputs[r].end());
  }
  std::vector<at::Tensor> houts = outs;
  auto staging = stageCall(ins, houts, "allgather_coalesced");
  return enqueue(c10d::OpType::ALLGATHER_COALESCED, outs, [this, ins, houts](uint64_t seq) {
    // Input i sits at offsets[i] of each rank's part, aligned for any dtype's view of the bytes.
    std::vector<int64_t> offsets;
    int64_t part = 0;
    for (const auto& t : ins) {
      offsets.push_back(part);
      part += (static_cast<int64_t>(t.nbytes()) + 15) / 16 * 16;
    }
    if (part == 0) return;  // every input is empty, on every rank
    const int p = getSize();
    at::Tensor packed = at::empty({part}, at::kByte);
    for (size_t i = 0; i < ins.size(); ++i)
      packed.narrow(0, offsets[i], ins[i].nbytes()).copy_(ins[i].contiguous().view(-1).view(at::kByte));
    at::Tensor all = at::from_blob(scratch_.get(part * p), {part * p}, at::kByte);
    gatherInto(all, packed, seq);
    for (int r = 0; r < p; ++r)
      for (size_t i = 0; i < ins.size(); ++i) {
        const at::Tensor& out = houts[r * ins.size() + i];
        out.copy_(all.narrow(0, r * part + offsets[i], ins[i].nbytes()).view(ins[i].scalar_type()).view(out.sizes()));
      }
  }, opts.asyncOp, staging);
}

void ProcessGroupZcoll::gatherIntoTensor(const at::Tensor& out, const at::Tensor& in, uint64_t seq) {
  at::Tensor flat = out.is_contiguous() ? out : at::empty_like(out, at::MemoryFormat::Contiguous);
  gatherInto(flat, in, seq, true);
  if (!flat.is_same(out)) out.copy_(flat);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::_allgather_base(at::Tensor& output, at::Tensor& input,
                                                                  const c10d::AllgatherOptions& opts) {
  checkGatherPair(output, input, getSize(), "allgather_into_tensor");
  at::Tensor out = output, in = input;
  auto staging = stagingFor({out, in}, "allgather_into_tensor");
  const DType dtype = toDType(in.scalar_type(), "allgather_into_tensor");
  if (staging && compresses("all_gather_into_tensor", dtype, out.nbytes(), std::nullopt)) {  // codecs on the device
    // The float32 gather buffer, holding this rank's part, filled now on the caller's stream.
    at::Tensor all;
    {
      c10::OptionalStreamGuard guard(staging->stream());
      all = at::empty({out.numel()}, in.options().dtype(at::kFloat));
      all.narrow(0, getRank() * in.numel(), in.numel()).copy_(in.reshape(-1));
    }
    return enqueue(c10d::OpType::_ALLGATHER_BASE, {out}, [this, staging, all, out, dtype](uint64_t seq) {
      deviceGatherNow(*staging, all, out, dtype, seq);
    }, opts.asyncOp, staging);
  }
  std::vector<at::Tensor> ins{in}, outs{out};
  if (staging) staging->replaceWithHostCopies(ins, outs);
  return enqueue(c10d::OpType::_ALLGATHER_BASE, {out},
                 [this, hout = outs[0], hin = ins[0]](uint64_t seq) { gatherIntoTensor(hout, hin, seq); },
                 opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs, const c10d::AllgatherOptions& opts) {
  ZCOLL_CHECK_ARG(outputs.size() == inputs.size(), "zcoll allgather_into_tensor_coalesced: ", outputs.size(),
                  " outputs for ", inputs.size(), " inputs");
  for (size_t i = 0; i < inputs.size(); ++i)
    checkGatherPair(outputs[i], inputs[i], getSize(), "allgather_into_tensor_coalesced");
  std::vector<at::Tensor> ins = inputs, outs = outputs;
  auto staging = stageCall(ins, outs, "allgather_into_tensor_coalesced");
  return enqueue(c10d::OpType::COALESCED, outputs, [this, outs, ins](uint64_t seq) {
    // One sequence number for the whole call; the tensors go one after another, so every rank
    // sends and receives them in the same order.
    for (size_t i = 0; i < ins.size(); ++i) gatherIntoTensor(outs[i], ins[i], seq);
  }, opts.asyncOp, staging);
}

// Ring reduce-scatter of a flat (world_size x output) input: rank r keeps the reduction of slice
// r (docs/arithmetic.md §4, reduce_scatter ring). `flatInput` returns the input as one flat
// tensor (a view where it can), which the collective copies before its schedule overwrites it:
// on the progress thread for CPU tensors; for device tensors (in `inputs`), now, on the
// caller's stream.
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::reduceScatterFlat(c10d::OpType type, at::Tensor output,
                                                                    const std::vector<at::Tensor>& inputs,
                                                                    std::function<at::Tensor()> flatInput,
                                                                    const c10d::ReduceOp& reduceOp, bool asyncOp) {
  const DType dtype = checkTensor(output, "reduce_scatter");
  double premul = 1.0;
  const RedOp op = toRedOp(reduceOp, &premul);
  checkReduceOp(dtype, op, "reduce_scatter");
  std::vector<at::Tensor> all = inputs;
  all.push_back(output);
  auto staging = stagingFor(all, "reduce_scatter");
  if (!staging) {
    return enqueue(type, {output}, [this, output, flatInput, op, dtype, premul](uint64_t seq) {
      reduceScatterNow(output, scratchCopy(flatInput()), op, dtype, premul, seq);
    }, asyncOp);
  }
  at::Tensor flat;
  {
    c10::OptionalStreamGuard guard(staging->stream());
    flat = flatInput();
  }
  if (compresses("reduce_scatter", dtype, flat.nbytes(), op)) {  // the codec work on the device
    const at::Tensor input = floatCopy(*staging, flat, op == RedOp::kPremulSum ? premul : 1.0);
    return enqueue(type, {output}, [this, staging, input, output, op, dtype](uint64_t seq) {
      deviceReduceScatterNow(*staging, input, output, op, dtype, seq);
    }, asyncOp, staging);
  }
  const at::Tensor hout = staging->host(output, false, true), hflat = staging->host(flat, true, false);
  // (hflat is the collective's own copy: reduceScatterNow may use it as scratch)
  return enqueue(type, {output}, [this, hout, hflat, op, dtype, premul](uint64_t seq) {
    reduceScatterNow(hout, hflat, op, dtype, premul, seq);
  }, asyncOp, staging);
}

void ProcessGroupZcoll::reduceScatterNow(const at::Tensor& output, at::Tensor scratch, RedOp op, DType dtype,
                                         double premul, uint64_t seq) {
  const size_t m = static_cast<size_t>(output.numel());
  if (op == RedOp::kPremulSum)
    kernels::cpu::premultiply(dtype, scratch.data_ptr(), scratch.data_ptr(), m * getSize(), premul);
  const EqualSlices slices(getSize(), m);
  if (compresses("reduce_scatter", dtype, scratch.nbytes(), op)) {
    const size_t r = static_cast<size_t>(getRank());
    float* data = float32View(scratch, dtype, m * getSize());
    if (dtype != DType::kFloat32) kernels::cpu::toFloat32(dtype, scratch.data_ptr(), data, m * getSize());
    Compression c;
    CollectiveArgs a = compressedArgs(OpCode::kReduceScatter, dtype, op, seq, c);
    TwoLevel levels;
    const Algorithm algo = chooseCompressed(Collective::kReduceScatter, scratch.nbytes(), a, &levels);
    if (algo == Algorithm::kHierarchical)
      hierarchicalCompressedReduceScatter(*transport_, topology_, data, slices.begin.data(), slices.end.data(), a, c,
                                          levels);
    else
      compressedReduceScatter(*transport_, data, slices.begin.data(), slices.end.data(), a, c, algo);
    if (dtype != DType::kFloat32)  // our slice, rounded once into the scratch tensor's dtype
      kernels::cpu::fromFloat32(dtype, data + r * m, static_cast<char*>(scratch.data_ptr()) + r * m * scratch.element_size(), m);
  } else {
    CollectiveArgs a = argsFor(OpCode::kReduceScatter, dtype, op, seq);
    TwoLevel levels;
    const Algorithm algo = choose(Collective::kReduceScatter, scratch.nbytes(), a, &levels);
    if (algo == Algorithm::kHierarchical)
      hierarchicalReduceScatter(*transport_, topology_, scratch.data_ptr(), slices.begin.data(), slices.end.data(), a,
                                levels);
    else
      reduceScatter(*transport_, scratch.data_ptr(), slices.begin.data(), slices.end.data(), a, algo);
  }
  output.copy_(scratch.narrow(0, getRank() * m, m).view(output.sizes()));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs, const c10d::ReduceScatterOptions& opts) {
  ZCOLL_CHECK_ARG(outputs.size() == inputs.size(), "zcoll reduce_scatter_tensor_coalesced: ", outputs.size(),
                  " outputs for ", inputs.size(), " inputs");
  double premul = 1.0;
  const RedOp op = toRedOp(opts.reduceOp, &premul);
  std::vector<DType> dtypes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    checkTensor(inputs[i], "reduce_scatter_tensor_coalesced");
    dtypes.push_back(checkTensor(outputs[i], "reduce_scatter_tensor_coalesced"));
    checkReduceOp(dtypes.back(), op, "reduce_scatter_tensor_coalesced");
    ZCOLL_CHECK_ARG(inputs[i].scalar_type() == outputs[i].scalar_type() &&
                          inputs[i].numel() == outputs[i].numel() * getSize(),
                    "zcoll reduce_scatter_tensor_coalesced: input ", i,
                    " must hold world_size x output elements of the output's dtype");
  }
  std::vector<at::Tensor> ins = inputs, outs = outputs;
  auto staging = stageCall(ins, outs, "reduce_scatter_tensor_coalesced");
  return enqueue(c10d::OpType::COALESCED, outputs, [this, outs, ins, dtypes, op, premul](uint64_t seq) {
    for (size_t i = 0; i < ins.size(); ++i)
      reduceScatterNow(outs[i], scratchCopy(ins[i]), op, dtypes[i], premul, seq);
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::_reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                                       const c10d::ReduceScatterOptions& opts) {
  checkTensor(input, "reduce_scatter_tensor");
  ZCOLL_CHECK_ARG(input.scalar_type() == output.scalar_type() && input.numel() == output.numel() * getSize(),
                  "zcoll reduce_scatter_tensor: input must hold world_size x output elements of the output's dtype");
  at::Tensor in = input;
  return reduceScatterFlat(c10d::OpType::_REDUCE_SCATTER_BASE, output, {in},
                           [in] { return in.contiguous().view(-1); }, opts.reduceOp, opts.asyncOp);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::reduce_scatter(std::vector<at::Tensor>& outputs,
                                                                 std::vector<std::vector<at::Tensor>>& inputs,
                                                                 const c10d::ReduceScatterOptions& opts) {
  ZCOLL_CHECK_ARG(outputs.size() == 1 && inputs.size() == 1,
                  "zcoll reduce_scatter: expects one output and one input list");
  ZCOLL_CHECK_ARG(static_cast<int>(inputs[0].size()) == getSize(), "zcoll reduce_scatter: input list has ",
                  inputs[0].size(), " tensors for a group of ", getSize());
  checkMatches(inputs[0], outputs[0], "reduce_scatter", "input", "output");
  std::vector<at::Tensor> parts = inputs[0];
  return reduceScatterFlat(c10d::OpType::REDUCE_SCATTER, outputs[0], parts, [parts] {
    std::vector<at::Tensor> flat;
    for (const auto& t : parts) flat.push_back(t.reshape(-1));
    return at::cat(flat);
  }, opts.reduceOp, opts.asyncOp);
}

// Root reduces every rank's input in rank order in A(T), rounding once (docs/arithmetic.md §4,
// reduce "oneshot"); other ranks' tensors are left as they were.
c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::reduce(std::vector<at::Tensor>& tensors,
                                                         const c10d::ReduceOptions& opts) {
  ZCOLL_CHECK_ARG(tensors.size() == 1, "zcoll reduce: expects one tensor per rank, got ", tensors.size(), kOneTensor);
  checkRoot(opts.rootRank, "reduce");
  at::Tensor t = tensors[0];
  const DType dtype = checkTensor(t, "reduce");
  double premul = 1.0;
  const RedOp op = toRedOp(opts.reduceOp, &premul);
  checkReduceOp(dtype, op, "reduce");
  neverCompressed("reduce", dtype, op, "all_reduce is");
  const int root = static_cast<int>(opts.rootRank);
  auto staging = stagingFor({t}, "reduce");
  const at::Tensor h = staging ? staging->host(t, true, getRank() == root) : t;
  return enqueue(c10d::OpType::REDUCE, {t}, [this, t = h, op, dtype, premul, root](uint64_t seq) {
    checkSameRoot(root, OpCode::kReduce, seq, "reduce");
    // The root reduces straight into its tensor; other ranks that accumulate (a tree's inner
    // ranks) or premultiply do it in a copy, leaving their tensors as they were, and the rest
    // send their tensors as they are.
    CollectiveArgs a = argsFor(OpCode::kReduce, dtype, op, seq);
    TwoLevel levels;
    const Algorithm algo = choose(Collective::kReduce, t.nbytes(), a, &levels);
    const bool isRoot = getRank() == root;
    const bool direct = t.is_contiguous() && (isRoot || (op != RedOp::kPremulSum && algo != Algorithm::kHierarchical &&
                                                        !reduceWritesData(getRank(), getSize(), root, algo)));
    at::Tensor mine = direct ? t.view(-1) : scratchCopy(t);
    const size_t n = static_cast<size_t>(mine.numel());
    if (op == RedOp::kPremulSum) kernels::cpu::premultiply(dtype, mine.data_ptr(), mine.data_ptr(), n, premul);
    if (algo == Algorithm::kHierarchical)  // other ranks: `mine` is scratch
      hierarchicalReduce(*transport_, topology_, mine.data_ptr(), n, root, a, levels);
    else
      reduceToRoot(*transport_, mine.data_ptr(), n, root, a, algo);
    if (isRoot && !direct) t.copy_(mine.view(t.sizes()));
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                         std::vector<at::Tensor>& inputs, const c10d::GatherOptions& opts) {
  checkRoot(opts.rootRank, "gather");
  ZCOLL_CHECK_ARG(inputs.size() == 1, "zcoll gather: expects one input tensor");
  at::Tensor in = inputs[0];
  checkTensor(in, "gather");
  const int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> outs;
  if (getRank() == root) {
    ZCOLL_CHECK_ARG(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == getSize(),
                    "zcoll gather: the root needs a list of world_size output tensors");
    outs = outputs[0];
    checkMatches(outs, in, "gather", "output", "input");
  }
  std::vector<at::Tensor> ins{in}, houts = outs;
  auto staging = stageCall(ins, houts, "gather");
  return enqueue(c10d::OpType::GATHER, outs, [this, in = ins[0], outs = houts, root](uint64_t seq) {
    checkSameRoot(root, OpCode::kGather, seq, "gather");
    std::vector<at::Tensor> sendTo(getSize()), recvFrom(getSize());
    if (getRank() != root) {
      sendTo[root] = in.contiguous();
    } else {
      for (int p = 0; p < getSize(); ++p)
        if (p != root) recvFrom[p] = at::empty({in.numel()}, in.options());
    }
    exchange(sendTo, recvFrom, copyTag(OpCode::kGather, in, seq));
    for (int p = 0; p < static_cast<int>(outs.size()); ++p)
      outs[p].copy_(p == root ? in : recvFrom[p].view(outs[p].sizes()));
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::scatter(std::vector<at::Tensor>& outputs,
                                                          std::vector<std::vector<at::Tensor>>& inputs,
                                                          const c10d::ScatterOptions& opts) {
  checkRoot(opts.rootRank, "scatter");
  ZCOLL_CHECK_ARG(outputs.size() == 1, "zcoll scatter: expects one output tensor");
  at::Tensor out = outputs[0];
  checkTensor(out, "scatter");
  const int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> ins;
  if (getRank() == root) {
    ZCOLL_CHECK_ARG(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == getSize(),
                    "zcoll scatter: the root needs a list of world_size input tensors");
    ins = inputs[0];
    checkMatches(ins, out, "scatter", "input", "output");
  }
  std::vector<at::Tensor> hins = ins, outs{out};
  auto staging = stageCall(hins, outs, "scatter");
  return enqueue(c10d::OpType::SCATTER, {out}, [this, out = outs[0], ins = hins, root](uint64_t seq) {
    checkSameRoot(root, OpCode::kScatter, seq, "scatter");
    std::vector<at::Tensor> sendTo(getSize()), recvFrom(getSize());
    at::Tensor buf = at::empty({out.numel()}, out.options());
    if (getRank() == root) {
      for (int p = 0; p < getSize(); ++p)
        if (p != root) sendTo[p] = ins[p].contiguous();
    } else {
      recvFrom[root] = buf;
    }
    exchange(sendTo, recvFrom, copyTag(OpCode::kScatter, out, seq));
    out.copy_(getRank() == root ? ins[root].view(out.sizes()) : buf.view(out.sizes()));
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::alltoall_base(at::Tensor& output, at::Tensor& input,
                                                                std::vector<int64_t>& outputSplitSizes,
                                                                std::vector<int64_t>& inputSplitSizes,
                                                                const c10d::AllToAllOptions& opts) {
  checkTensor(input, "all_to_all_single");
  checkTensor(output, "all_to_all_single");
  ZCOLL_CHECK_ARG(input.scalar_type() == output.scalar_type(), "zcoll all_to_all_single: dtypes differ");
  const int p = getSize();
  // Splits are in rows of dim 0; none given means equal parts.
  auto splits = [p](const at::Tensor& t, const std::vector<int64_t>& given, const char* what) {
    std::vector<int64_t> rows = given;
    const int64_t dim0 = t.dim() ? t.size(0) : 1;
    if (rows.empty()) {
      ZCOLL_CHECK_ARG(dim0 % p == 0, "zcoll all_to_all_single: ", what, " dim 0 (", dim0,
                      ") does not split evenly over ", p, " ranks");
      rows.assign(p, dim0 / p);
    }
    ZCOLL_CHECK_ARG(static_cast<int>(rows.size()) == p, "zcoll all_to_all_single: ", what, " has ", rows.size(),
                    " split sizes for ", p, " ranks");
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    ZCOLL_CHECK_ARG(total == dim0, "zcoll all_to_all_single: ", what, " split sizes add up to ", total,
                    ", not dim 0 = ", dim0);
    return rows;
  };
  const auto inRows = splits(input, inputSplitSizes, "input"), outRows = splits(output, outputSplitSizes, "output");
  std::vector<at::Tensor> ins{input}, outs{output};
  auto staging = stageCall(ins, outs, "all_to_all_single");
  return enqueue(c10d::OpType::ALLTOALL_BASE, {output},
                 [this, in = ins[0], out = outs[0], inRows, outRows](uint64_t seq) {
    at::Tensor src = asRows(in.contiguous());
    // Received straight into `out` when it is contiguous and is not also the input.
    const bool direct = out.is_contiguous() && !out.is_alias_of(in);
    at::Tensor dst = asRows(direct ? out : at::empty_like(out, at::MemoryFormat::Contiguous));
    std::vector<at::Tensor> sendTo(getSize()), recvFrom(getSize());
    for (int64_t q = 0, si = 0, so = 0; q < getSize(); si += inRows[q], so += outRows[q], ++q) {
      sendTo[q] = src.narrow(0, si, inRows[q]);
      recvFrom[q] = dst.narrow(0, so, outRows[q]);  // contiguous: rows of a contiguous matrix
    }
    exchange(sendTo, recvFrom, copyTag(OpCode::kAllToAll, out, seq));
    if (!direct) out.copy_(dst.view(out.sizes()));
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::alltoall(std::vector<at::Tensor>& outputs,
                                                           std::vector<at::Tensor>& inputs, const c10d::AllToAllOptions& opts) {
  ZCOLL_CHECK_ARG(static_cast<int>(inputs.size()) == getSize() && static_cast<int>(outputs.size()) == getSize(),
                  "zcoll all_to_all: needs world_size input and output tensors");
  for (int q = 0; q < getSize(); ++q) {
    checkTensor(inputs[q], "all_to_all");
    checkTensor(outputs[q], "all_to_all");
    ZCOLL_CHECK_ARG(inputs[q].scalar_type() == outputs[q].scalar_type(), "zcoll all_to_all: dtypes differ");
  }
  std::vector<at::Tensor> ins = inputs, outs = outputs;
  auto staging = stageCall(ins, outs, "all_to_all");
  return enqueue(c10d::OpType::ALLTOALL, outputs, [this, ins, outs](uint64_t seq) {
    std::vector<at::Tensor> sendTo(getSize()), recvFrom(getSize());
    for (int q = 0; q < getSize(); ++q) {
      sendTo[q] = ins[q].contiguous();
      recvFrom[q] = at::empty({outs[q].numel()}, outs[q].options());
    }
    exchange(sendTo, recvFrom, copyTag(OpCode::kAllToAll, outs[0], seq));
    for (int q = 0; q < getSize(); ++q) outs[q].copy_(recvFrom[q].view(outs[q].sizes()));
  }, opts.asyncOp, staging);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupZcoll::barrier(const c10d::BarrierOptions& opts) {
  at::Tensor token = at::zeros({1}, at::kInt);
  return enqueue(c10d::OpType::BARRIER, {token}, [this, token](uint64_t seq) {
    CollectiveArgs a = argsFor(OpCode::kBarrier, DType::kInt32, RedOp::kSum, seq);
    if (topology_.twoLevel())  // one message per rank over the network, not one per remote rank
      hierarchicalAllReduce(*transport_, topology_, token.data_ptr(), 1, a, {Algorithm::kTwoShot, Algorithm::kOneShot});
    else
      allReduce(*transport_, token.data_ptr(), 1, a, Algorithm::kOneShot);  // one round
  }, opts.asyncOp);
}

}  // namespace zcoll
