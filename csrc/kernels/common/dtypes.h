// Tensor dtypes and reduction ops as the torch-free layers see them (docs/arithmetic.md §2-3).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zcoll {

enum class DType : int { kFloat64, kFloat32, kFloat16, kBFloat16, kInt8, kInt16, kInt32, kInt64, kUInt8, kBool };

enum class RedOp : int { kSum, kAvg, kProduct, kMin, kMax, kBand, kBor, kBxor, kPremulSum };

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kFloat64: case DType::kInt64: return 8;
    case DType::kFloat32: case DType::kInt32: return 4;
    case DType::kFloat16: case DType::kBFloat16: case DType::kInt16: return 2;
    default: return 1;
  }
}

inline bool isFloating(DType t) {
  return t == DType::kFloat64 || t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16;
}

inline const char* dtypeName(DType t) {
  static const char* const names[] = {"float64", "float32", "float16", "bfloat16", "int8",
                                      "int16",   "int32",   "int64",   "uint8",    "bool"};
  return names[static_cast<int>(t)];
}

inline const char* redOpName(RedOp op) {
  static const char* const names[] = {"sum", "avg", "product", "min", "max", "band", "bor", "bxor", "premul_sum"};
  return names[static_cast<int>(op)];
}

}  // namespace zcoll
