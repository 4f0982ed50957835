#include "kernels/cpu/reduce_cpu.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/common/float_convert.h"
#include "kernels/cpu/vector_clones.h"
#include "util/error.h"

namespace zcoll::kernels::cpu {
namespace {

struct Half { uint16_t bits; };
struct BHalf { uint16_t bits; };
struct Bool8 { uint8_t v; };

// Storage type -> accumulation type A(T) and the exact conversions between them.
template <typename T> struct Acc {
  using type = T;
  static T in(T x) { return x; }
  static T out(T a) { return a; }
};
template <> struct Acc<Half> {
  using type = float;
  static float in(Half h) { return halfToFloat(h.bits); }
  static Half out(float a) { return {floatToHalf(a)}; }
};
template <> struct Acc<BHalf> {
  using type = float;
  static float in(BHalf h) { return bf16ToFloat(h.bits); }
  static BHalf out(float a) { return {floatToBf16(a)}; }
};
template <> struct Acc<Bool8> {
  using type = bool;
  static bool in(Bool8 b) { return b.v != 0; }
  static Bool8 out(bool a) { return {static_cast<uint8_t>(a ? 1 : 0)}; }
};

// Integer arithmetic wraps modulo 2^bits (signed overflow would be undefined in C++).
template <typename A> A wrapAdd(A a, A b) {
  using U = std::make_unsigned_t<A>;
  return static_cast<A>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <typename A> A wrapMul(A a, A b) {
  using W = std::conditional_t<(sizeof(A) <= 4), uint32_t, uint64_t>;
  return static_cast<A>(static_cast<W>(a) * static_cast<W>(b));
}

// a ⊕ b, a the accumulated value (docs/arithmetic.md §3).
template <RedOp kOp, typename A> A combine(A a, A b) {
  if constexpr (std::is_same_v<A, bool>) {
    if constexpr (kOp == RedOp::kProduct || kOp == RedOp::kMin || kOp == RedOp::kBand) return a && b;
    else if constexpr (kOp == RedOp::kBxor) return a != b;
    else return a || b;  // sum, max, bor
  } else if constexpr (std::is_floating_point_v<A>) {
    if constexpr (kOp == RedOp::kProduct) return a * b;
    else if constexpr (kOp == RedOp::kMin) return std::isnan(a) ? a : std::isnan(b) ? b : (b < a ? b : a);
    else if constexpr (kOp == RedOp::kMax) return std::isnan(a) ? a : std::isnan(b) ? b : (b > a ? b : a);
    else return a + b;  // sum, avg, premul_sum
  } else {
    if constexpr (kOp == RedOp::kProduct) return wrapMul(a, b);
    else if constexpr (kOp == RedOp::kMin) return b < a ? b : a;
    else if constexpr (kOp == RedOp::kMax) return b > a ? b : a;
    else if constexpr (kOp == RedOp::kBand) return static_cast<A>(a & b);
    else if constexpr (kOp == RedOp::kBor) return static_cast<A>(a | b);
    else if constexpr (kOp == RedOp::kBxor) return static_cast<A>(a ^ b);
    else return wrapAdd(a, b);
  }
}

template <typename A> A divideBy(A a, int64_t p) {
  if constexpr (std::is_floating_point_v<A>) return a / static_cast<A>(p);
  else return static_cast<A>(static_cast<int64_t>(a) / p);  // C division truncates toward zero
}

// Tiles keep the A(T) accumulator in L1 and let the compiler vectorise each source pass.
constexpr size_t kTile = 512;

// The hot case of every schedule (a ring step, a tree's one child, two ranks): a float32 sum of
// two sources, dst[i] = a[i] + b[i] (then / divisor), in one pass and with the widest vectors the
// CPU has (vector_clones.h): the same bits from every clone.
// Written with vector types rather than left to the auto-vectoriser, which falls back to scalar
// code when `out` is `a` (in place, the usual case).
typedef float Float16x __attribute__((vector_size(64), aligned(4), may_alias));
ZCOLL_VECTOR_CLONES void sumTwoFloat(const float* a, const float* b, float* out, size_t n, float divisor) {
  constexpr size_t kLanes = sizeof(Float16x) / sizeof(float);
  size_t i = 0;
  if (divisor != 0.0f) {
    for (; i + kLanes <= n; i += kLanes) {
      const Float16x sum = *reinterpret_cast<const Float16x*>(a + i) + *reinterpret_cast<const Float16x*>(b + i);
      *reinterpret_cast<Float16x*>(out + i) = sum / divisor;
    }
    for (; i < n; ++i) out[i] = (a[i] + b[i]) / divisor;
  } else {
    for (; i + kLanes <= n; i += kLanes)
      *reinterpret_cast<Float16x*>(out + i) =
          *reinterpret_cast<const Float16x*>(a + i) + *reinterpret_cast<const Float16x*>(b + i);
    for (; i < n; ++i) out[i] = a[i] + b[i];
  }
}

template <typename T, RedOp kOp>
void reduceTiles(const void* const* srcs, int nsrc, void* dst, size_t n, int64_t divisor) {
  if constexpr (std::is_same_v<T, float> && kOp == RedOp::kSum) {
    if (nsrc == 2)
      return sumTwoFloat(static_cast<const float*>(srcs[0]), static_cast<const float*>(srcs[1]), static_cast<float*>(dst),
                         n, divisor > 0 ? static_cast<float>(divisor) : 0.0f);
  }
  using A = typename Acc<T>::type;
  A acc[kTile];
  T* out = static_cast<T*>(dst);
  for (size_t base = 0; base < n; base += kTile) {
    const size_t m = std::min(kTile, n - base);
    const T* s0 = static_cast<const T*>(srcs[0]) + base;
    for (size_t i = 0; i < m; ++i) acc[i] = Acc<T>::in(s0[i]);
    for (int k = 1; k < nsrc; ++k) {
      const T* s = static_cast<const T*>(srcs[k]) + base;
      for (size_t i = 0; i < m; ++i) acc[i] = combine<kOp>(acc[i], Acc<T>::in(s[i]));
    }
    if constexpr (!std::is_same_v<A, bool>) {
      if (divisor > 0)
        for (size_t i = 0; i < m; ++i) acc[i] = divideBy(acc[i], divisor);
    }
    for (size_t i = 0; i < m; ++i) out[base + i] = Acc<T>::out(acc[i]);
  }
}

template <typename T>
void reduceTyped(RedOp op, const void* const* srcs, int nsrc, void* dst, size_t n, int64_t divisor) {
  switch (op) {
    case RedOp::kProduct: return reduceTiles<T, RedOp::kProduct>(srcs, nsrc, dst, n, divisor);
    case RedOp::kMin: return reduceTiles<T, RedOp::kMin>(srcs, nsrc, dst, n, divisor);
    case RedOp::kMax: return reduceTiles<T, RedOp::kMax>(srcs, nsrc, dst, n, divisor);
    case RedOp::kBand: return reduceTiles<T, RedOp::kBand>(srcs, nsrc, dst, n, divisor);
    case RedOp::kBor: return reduceTiles<T, RedOp::kBor>(srcs, nsrc, dst, n, divisor);
    case RedOp::kBxor: return reduceTiles<T, RedOp::kBxor>(srcs, nsrc, dst, n, divisor);
    default: return reduceTiles<T, RedOp::kSum>(srcs, nsrc, dst, n, divisor);  // sum, avg, premul_sum
  }
}

template <typename T> void premulTyped(const void* x, void* dst, size_t n, double factor) {
  using A = typename Acc<T>::type;
  A f;
  if constexpr (std::is_floating_point_v<A>) {
    f = static_cast<A>(factor);
  } else {
    ZCOLL_CHECK(factor == std::floor(factor) && std::fabs(factor) < 9.2e18,
                "premul_sum on an integer dtype needs an integral factor, got ", factor);
    f = static_cast<A>(static_cast<std::make_unsigned_t<A>>(static_cast<int64_t>(factor)));
  }
  const T* in = static_cast<const T*>(x);
  T* out = static_cast<T*>(dst);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (std::is_floating_point_v<A>) out[i] = Acc<T>::out(Acc<T>::in(in[i]) * f);
    else out[i] = wrapMul(in[i], f);
  }
}

template <typename T> void widen(const void* x, float* dst, size_t n) {
  const T* in = static_cast<const T*>(x);
  for (size_t i = 0; i < n; ++i) dst[i] = Acc<T>::in(in[i]);
}

template <typename T> void narrow(const float* x, void* dst, size_t n) {
  T* out = static_cast<T*>(dst);
  for (size_t i = 0; i < n; ++i) out[i] = Acc<T>::out(x[i]);
}

void checkFloat32Acc(DType dtype) {
  ZCOLL_CHECK(dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16,
              "float32 accumulation is for float32, float16 and bfloat16, not ", dtypeName(dtype));
}

}  // namespace

void toFloat32(DType dtype, const void* x, float* dst, size_t n) {
  checkFloat32Acc(dtype);
  if (dtype == DType::kFloat16) return widen<Half>(x, dst, n);
  if (dtype == DType::kBFloat16) return widen<BHalf>(x, dst, n);
  return widen<float>(x, dst, n);
}

void fromFloat32(DType dtype, const float* x, void* dst, size_t n) {
  checkFloat32Acc(dtype);
  if (dtype == DType::kFloat16) return narrow<Half>(x, dst, n);
  if (dtype == DType::kBFloat16) return narrow<BHalf>(x, dst, n);
  return narrow<float>(x, dst, n);
}

std::string reduceOpProblem(DType dtype, RedOp op) {
  const bool bitwise = op == RedOp::kBand || op == RedOp::kBor || op == RedOp::kBxor;
  if (bitwise && isFloating(dtype))
    return std::string("reduce op ") + redOpName(op) + " is bitwise and not defined for " + dtypeName(dtype);
  if ((op == RedOp::kAvg || op == RedOp::kPremulSum) && dtype == DType::kBool)
    return std::string("reduce op ") + redOpName(op) + " is not defined for bool";
  return "";
}

void checkReduceOp(DType dtype, RedOp op) {
  const std::string problem = reduceOpProblem(dtype, op);
  ZCOLL_CHECK(problem.empty(), problem);
}

void reduceSources(DType dtype, RedOp op, const void* const* srcs, int nsrc, void* dst, size_t n,
                   int64_t divisor) {
  checkReduceOp(dtype, op);
  ZCOLL_CHECK(nsrc >= 1, "reduceSources needs at least one source, got ", nsrc);
  switch (dtype) {
    case DType::kFloat64: return reduceTyped<double>(op, srcs, nsrc, dst, n, divisor);
    case DType::kFloat32: return reduceTyped<float>(op, srcs, nsrc, dst, n, divisor);
    case DType::kFloat16: return reduceTyped<Half>(op, srcs, nsrc, dst, n, divisor);
    case DType::kBFloat16: return reduceTyped<BHalf>(op, srcs, nsrc, dst, n, divisor);
    case DType::kInt8: return reduceTyped<int8_t>(op, srcs, nsrc, dst, n, divisor);
    case DType::kInt16: return reduceTyped<int16_t>(op, srcs, nsrc, dst, n, divisor);
    case DType::kInt32: return reduceTyped<int32_t>(op, srcs, nsrc, dst, n, divisor);
    case DType::kInt64: return reduceTyped<int64_t>(op, srcs, nsrc, dst, n, divisor);
    case DType::kUInt8: return reduceTyped<uint8_t>(op, srcs, nsrc, dst, n, divisor);
    case DType::kBool: return reduceTyped<Bool8>(op, srcs, nsrc, dst, n, divisor);
  }
}

void premultiply(DType dtype, const void* x, void* dst, size_t n, double factor) {
  checkReduceOp(dtype, RedOp::kPremulSum);
  switch (dtype) {
    case DType::kFloat64: return premulTyped<double>(x, dst, n, factor);
    case DType::kFloat32: return premulTyped<float>(x, dst, n, factor);
    case DType::kFloat16: return premulTyped<Half>(x, dst, n, factor);
    case DType::kBFloat16: return premulTyped<BHalf>(x, dst, n, factor);
    case DType::kInt8: return premulTyped<int8_t>(x, dst, n, factor);
    case DType::kInt16: return premulTyped<int16_t>(x, dst, n, factor);
    case DType::kInt32: return premulTyped<int32_t>(x, dst, n, factor);
    case DType::kInt64: return premulTyped<int64_t>(x, dst, n, factor);
    case DType::kUInt8: return premulTyped<uint8_t>(x, dst, n, factor);
    case DType::kBool: break;  // rejected by checkReduceOp
  }
}

}  // namespace zcoll::kernels::cpu
