// Message tags: what a message belongs to, checked by the receiver of every message.
//
// A collective's tag names the collective (opcode), its reduce op and dtype, the group's
// sequence number, and the step and chunk inside the schedule:
//   opcode:6 | redop:4 | dtype:4 | seq:18 | step:12 | chunk:20
// Because every frame carries it and the receiver compares it with what it posted, ranks that
// run different collectives, or the same collective with a different op or dtype (SUM vs MAX on
// same-sized tensors), fail with an error that names both sides instead of mixing data; sizes are
// compared too. Tags outside this layout (tests, point-to-point envelopes) are plain numbers.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/common/dtypes.h"

namespace zcoll {

enum class OpCode : uint8_t {
  kAllReduce = 1, kBroadcast, kAllGather, kReduceScatter, kGather, kScatter, kAllToAll, kReduce, kBarrier,
  kTune,  // the cost model's probe and agreement at group creation (algorithms/cost_model.h)
};

// redop field of collectives that do not reduce (broadcast, gathers, all-to-all).
constexpr uint8_t kNoRedOp = 0xF;

struct TagFields {
  OpCode opcode;
  uint8_t redop;  // RedOp, or kNoRedOp
  DType dtype;
  uint64_t seq;   // kept modulo 2^18: per-pair FIFO order makes wrap-around harmless
  uint32_t step;  // < 4096
  uint32_t chunk; // kept modulo 2^20
};

uint64_t packTag(const TagFields& f);

// "allreduce(sum, float32) #12 step 3 chunk 0", or "tag 0x..." for tags of no collective.
std::string describeTag(uint64_t tag);

}  // namespace zcoll

namespace zcoll {

// The error text of a frame that is not the one a receive posted.
std::string mismatchMessage(const char* transport, int rank, int peer, uint64_t wantTag, uint64_t wantBytes,
                            uint64_t gotTag, uint64_t gotBytes);

// The error text of a message whose CRC32C trailer (`sent`) does not match its payload (`got`).
std::string checksumMessage(const char* transport, int rank, int peer, uint64_t tag, uint64_t bytes, uint64_t sent,
                            uint64_t got);

}  // namespace zcoll
