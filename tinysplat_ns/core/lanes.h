// The vector lanes of TinySplat's compiled CPU path (rasterize_cpp.cpp: eight or sixteen pixels at a
// time; project_cpp.cpp: as many Gaussians), in GCC/Clang vector types: the compiler's
// auto-vectoriser gives up on these loops' selects without -ffast-math, which would also drop the NaN
// propagation the trainer's divergence check relies on. Comparisons give lane masks (-1 / 0);
// `mask ? a : b` selects per lane. Arithmetic is IEEE lane by lane, as the scalar operations are.
#pragma once

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>

#ifndef TINYSPLAT_LANES
#define TINYSPLAT_LANES 8
#endif
constexpr int LANES = TINYSPLAT_LANES;  // 16 where the build has AVX-512
// Where a vector of LANES floats is one AVX-512 or AVX register, a few steps use its instructions directly.
#if defined(__AVX512F__) && TINYSPLAT_LANES == 16
#define TINYSPLAT_AVX512 1
#elif defined(__AVX__) && TINYSPLAT_LANES == 8
#define TINYSPLAT_AVX 1
#endif
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));

inline vf splat(float x) { return vf{} + x; }

// Whether any lane of a lane mask is set: one or two instructions where the vector unit has them.
inline bool any_lane(vi mask) {
#ifdef TINYSPLAT_AVX512
  const __m512i m = reinterpret_cast<const __m512i&>(mask);
  return _mm512_test_epi32_mask(m, m) != 0;
#elif defined(TINYSPLAT_AVX)
  return _mm256_movemask_ps(reinterpret_cast<const __m256&>(mask)) != 0;
#else
  for (int l = 0; l < LANES; ++l)
    if (mask[l]) return true;
  return false;
#endif
}

// std::max and std::min lane by lane, NaNs included: max(a, b) is a < b ? b : a, min(a, b) is b < a ? b : a.
inline vf lane_max(vf a, vf b) { return a < b ? b : a; }
inline vf lane_min(vf a, vf b) { return b < a ? b : a; }

inline vf lane_sqrt(vf x) {
#ifdef TINYSPLAT_AVX512
  const __m512 r = _mm512_sqrt_ps(reinterpret_cast<const __m512&>(x));
  return reinterpret_cast<const vf&>(r);
#elif defined(TINYSPLAT_AVX)
  const __m256 r = _mm256_sqrt_ps(reinterpret_cast<const __m256&>(x));
  return reinterpret_cast<const vf&>(r);
#else
  for (int l = 0; l < LANES; ++l) x[l] = std::sqrt(x[l]);
  return x;
#endif
}

inline vf lane_ceil(vf x) {
#ifdef TINYSPLAT_AVX512
  const __m512 r = _mm512_roundscale_ps(reinterpret_cast<const __m512&>(x), _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
  return reinterpret_cast<const vf&>(r);
#elif defined(TINYSPLAT_AVX)
  const __m256 r = _mm256_round_ps(reinterpret_cast<const __m256&>(x), _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
  return reinterpret_cast<const vf&>(r);
#else
  for (int l = 0; l < LANES; ++l) x[l] = std::ceil(x[l]);
  return x;
#endif
}

// Lane l of the result is p[stride l] for l < count, 0 past it: the end of an array of rows.
template <typename T, typename V>
inline V gather_rows(const T* p, int stride, int count) {
  V v{};
  for (int l = 0; l < count; ++l) v[l] = p[stride * l];
  return v;
}
inline vf load_rows(const float* p, int stride, int count) { return gather_rows<float, vf>(p, stride, count); }
inline vi load_rows(const int32_t* p, int stride, int count) { return gather_rows<int32_t, vi>(p, stride, count); }

// p[stride l] = lane l of v, for l < count
template <typename T, typename V>
inline void store_rows(T* p, int stride, int count, V v) {
  for (int l = 0; l < count; ++l) p[stride * l] = v[l];
}
