#include "transport/tag.h"

#include <cstdio>
#include <sstream>

namespace zcoll {
namespace {

constexpr int kChunkBits = 20, kStepBits = 12, kSeqBits = 18, kDTypeBits = 4, kRedOpBits = 4;
constexpr int kStepShift = kChunkBits, kSeqShift = kStepShift + kStepBits, kDTypeShift = kSeqShift + kSeqBits,
              kRedOpShift = kDTypeShift + kDTypeBits, kOpShift = kRedOpShift + kRedOpBits;
static_assert(kOpShift + 6 == 64, "the tag fields fill 64 bits");

constexpr uint64_t mask(int bits) { return (uint64_t{1} << bits) - 1; }

const char* opcodeName(uint64_t op) {
  static const char* const names[] = {"?",      "allreduce", "broadcast", "allgather", "reduce_scatter",
                                      "gather", "scatter",   "alltoall",  "reduce",    "barrier",
                                      "tune"};
  return op < sizeof names / sizeof names[0] ? names[op] : nullptr;
}

}  // namespace

uint64_t packTag(const TagFields& f) {
  return (static_cast<uint64_t>(f.opcode) << kOpShift) | ((f.redop & mask(kRedOpBits)) << kRedOpShift) |
         ((static_cast<uint64_t>(f.dtype) & mask(kDTypeBits)) << kDTypeShift) | ((f.seq & mask(kSeqBits)) << kSeqShift) |
         ((f.step & mask(kStepBits)) << kStepShift) | (f.chunk & mask(kChunkBits));
}

std::string describeTag(uint64_t tag) {
  const uint64_t op = tag >> kOpShift, redop = (tag >> kRedOpShift) & mask(kRedOpBits),
                 dtype = (tag >> kDTypeShift) & mask(kDTypeBits);
  char buf[160];
  const char* opName = opcodeName(op);
  if (op == 0 || opName == nullptr || dtype > static_cast<uint64_t>(DType::kBool) ||
      (redop != kNoRedOp && redop > static_cast<uint64_t>(RedOp::kPremulSum))) {
    std::snprintf(buf, sizeof buf, "tag 0x%llx", static_cast<unsigned long long>(tag));
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%s(%s%s%s) #%llu step %llu chunk %llu", opName,
                redop == kNoRedOp ? "" : redOpName(static_cast<RedOp>(redop)), redop == kNoRedOp ? "" : ", ",
                dtypeName(static_cast<DType>(dtype)), static_cast<unsigned long long>((tag >> kSeqShift) & mask(kSeqBits)),
                static_cast<unsigned long long>((tag >> kStepShift) & mask(kStepBits)),
                static_cast<unsigned long long>(tag & mask(kChunkBits)));
  return buf;
}

}  // namespace zcoll

namespace zcoll {

std::string mismatchMessage(const char* transport, int rank, int peer, uint64_t wantTag, uint64_t wantBytes,
                            uint64_t gotTag, uint64_t gotBytes) {
  return "rank " + std::to_string(rank) + " " + transport + ": rank " + std::to_string(peer) + " sent " +
         describeTag(gotTag) + " of " + std::to_string(gotBytes) + " bytes where " + describeTag(wantTag) + " of " +
         std::to_string(wantBytes) + " bytes was expected (collectives differ across ranks?)";
}

std::string checksumMessage(const char* transport, int rank, int peer, uint64_t tag, uint64_t bytes, uint64_t sent,
                            uint64_t got) {
  std::ostringstream os;
  os << "rank " << rank << " " << transport << ": checksum mismatch on the link from rank " << peer << " to rank "
     << rank << ": a message of " << bytes << " bytes of " << describeTag(tag) << " arrived corrupted (CRC32C 0x"
     << std::hex << got << ", sent 0x" << sent << ")";
  return os.str();
}

}  // namespace zcoll
