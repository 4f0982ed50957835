// Compressed all-reduce schedules over float32 data (docs/arithmetic.md §6): ring (requantise
// at every hop) and two-shot (encode each contribution once, sum exactly at the owner, encode
// the sum once); both end with an all-gather of the owners' encoded segments, which every rank,
// the owner too, decodes. Results equal zcoll.reference's compressed all_reduce bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "algorithms/collective.h"
#include "kernels/codec_device.h"
#include "kernels/common/codec_math.h"

namespace zcoll {

struct Compression {
  kernels::Codec codec = kernels::Codec::kInt8;
  int block = kernels::kDefaultBlock;  // blockwise codecs
  uint64_t seed = 0;                   // with step: the stochastic-rounding stream
  uint64_t step = 0;
  // The hash's index of the data's first element: a hierarchical schedule compresses pieces of
  // the tensor, each with the indices it has in the whole (arithmetic.md §4, hierarchical).
  uint64_t elementBase = 0;
};

// Partition alignment in elements: the block for int8/int4, 32 for fp16/bf16.
size_t compressionAlign(const Compression& c);

// In place over `count` float32 values; `a.op` is SUM or AVG (PREMUL_SUM inputs arrive scaled);
// `algo` is kRing or kTwoShot. With `residual` (count floats, this rank's error-feedback state),
// the collective runs on data + residual and leaves the new residual there: at every position
// this rank encodes, v - D(E(v)) (times p for an AVG result), elsewhere 0 (arithmetic.md §6).
void compressedAllReduce(Transport& t, float* data, size_t count, const CollectiveArgs& a, const Compression& c,
                         Algorithm algo, float* residual = nullptr);

// Reduce-scatter over caller-given slices (slice r ends at rank r): the reduce halves of the
// schedules above; rank r's slice of `data` gets the float32 sum (AVG: / p), not encoded again.
void compressedReduceScatter(Transport& t, float* data, const size_t* segBegin, const size_t* segEnd,
                             const CollectiveArgs& a, const Compression& c, Algorithm algo,
                             float* residual = nullptr);

// All-gather in place (slice s comes from rank s): each rank encodes its slice once (gather
// stage, indices global in `data`), every rank, the sender too, decodes every slice.
void compressedAllGather(Transport& t, float* data, const size_t* segBegin, const size_t* segEnd,
                         const CollectiveArgs& a, const Compression& c);

// The same collectives for data in a device's memory (`data`, `residual` and every kernel on
// `dev`, e.g. a CUDA tensor's): two-shot all-reduce and reduce-scatter, and the all-gather, with
// the codec work on the device and only encoded bytes crossing to the host, whose transport
// sends exactly what the host schedules send. Results equal theirs bit for bit. They return
// with the device synchronised: the results are in place.
void stagedCompressedAllReduce(Transport& t, kernels::CodecDevice& dev, float* data, size_t count,
                               const CollectiveArgs& a, const Compression& c, float* residual = nullptr);
void stagedCompressedReduceScatter(Transport& t, kernels::CodecDevice& dev, float* data, const size_t* segBegin,
                                   const size_t* segEnd, const CollectiveArgs& a, const Compression& c,
                                   float* residual = nullptr);
void stagedCompressedAllGather(Transport& t, kernels::CodecDevice& dev, float* data, const size_t* segBegin,
                               const size_t* segEnd, const CollectiveArgs& a, const Compression& c);

}  // namespace zcoll
