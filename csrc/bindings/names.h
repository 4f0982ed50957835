// Python-facing names of dtypes and reduce ops (the strings zcoll.reference uses).
#pragma once

#include <stdexcept>
#include <string>

#include "kernels/common/codec_math.h"
#include "kernels/common/dtypes.h"

namespace zcoll::bindings {

inline DType parseDType(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(DType::kBool); ++i)
    if (name == dtypeName(static_cast<DType>(i))) return static_cast<DType>(i);
  throw std::invalid_argument("unsupported dtype '" + name + "'");
}

inline RedOp parseRedOp(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(RedOp::kPremulSum); ++i)
    if (name == redOpName(static_cast<RedOp>(i))) return static_cast<RedOp>(i);
  throw std::invalid_argument("unknown reduce op '" + name + "'");
}

inline kernels::Codec parseCodec(const std::string& name) {
  if (name == "fp16") return kernels::Codec::kFp16;
  if (name == "bf16") return kernels::Codec::kBf16;
  if (name == "int8") return kernels::Codec::kInt8;
  if (name == "int4") return kernels::Codec::kInt4;
  throw std::invalid_argument("unknown codec '" + name + "'; supported: fp16, bf16, int8, int4");
}

}  // namespace zcoll::bindings
