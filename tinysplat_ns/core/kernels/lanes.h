// The vector lanes of TinySplat's compiled CPU path (rasterize.cpp: eight or sixteen pixels at a
// time; project.cpp: as many Gaussians), in GCC/Clang vector types: the compiler's
// auto-vectoriser gives up on these loops' selects without -ffast-math, which would also drop the NaN
// propagation the trainer's divergence check relies on. Comparisons give lane masks (-1 / 0);
// `mask ? a : b` selects per lane. Arithmetic is IEEE lane by lane, as the scalar operations are.
#pragma once

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

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

// Where element q of LANES rows of S values, laid end to end, sits: vector q / LANES, lane q % LANES.
// The shuffles below move a whole block of rows between that layout and S columns, one lane per row:
// S loads or stores and a few shuffles, where a lane at a time took a load or store per value.
template <int S, int J, int M, int... L>
inline vf column_part(vf acc, vf next, std::integer_sequence<int, L...>) {
  // column J's lanes that lie in vector M come from next; M == 1: those in vector 0 from acc (vector 0
  // itself), by position; M > 1: acc's lanes are already in place
  return __builtin_shufflevector(
      acc, next,
      ((L * S + J) / LANES == M ? (L * S + J) % LANES + LANES : M == 1 ? (L * S + J) % LANES : L)...);
}

template <int S, int M, int J, int... E>
inline vf row_part(vf acc, vf column, std::integer_sequence<int, E...>) {
  // vector M's lanes whose value is of column J come from lane (M LANES + E) / S of that column;
  // J == 1: those of column 0 from acc (column 0 itself), the same lane
  return __builtin_shufflevector(
      acc, column,
      ((M * LANES + E) % S == J ? (M * LANES + E) / S + LANES
       : J == 1                 ? ((M * LANES + E) % S == 0 ? (M * LANES + E) / S : 0)
                                : E)...);
}

// Column J of S rows vectors: column_part for vectors 1 .. S - 1 in turn.
template <int S, int J, int M = 1>
inline vf column_of(const vf* rows, vf acc) {
  acc = column_part<S, J, M>(acc, rows[M], std::make_integer_sequence<int, LANES>{});
  if constexpr (M + 1 < S) return column_of<S, J, M + 1>(rows, acc);
  return acc;
}

// Row vector M of S columns: row_part for columns 1 .. S - 1 in turn.
template <int S, int M, int J = 1>
inline vf row_of(const vf* columns, vf acc) {
  acc = row_part<S, M, J>(acc, columns[J], std::make_integer_sequence<int, LANES>{});
  if constexpr (J + 1 < S) return row_of<S, M, J + 1>(columns, acc);
  return acc;
}

template <int S, int J = 0>
inline void columns_of(const vf* rows, vf* columns) {
  columns[J] = column_of<S, J>(rows, rows[0]);
  if constexpr (J + 1 < S) columns_of<S, J + 1>(rows, columns);
}

template <int S, int M = 0>
inline void rows_of(const vf* columns, vf* rows) {
  rows[M] = row_of<S, M>(columns, columns[0]);
  if constexpr (M + 1 < S) rows_of<S, M + 1>(columns, rows);
}

// columns[j] lane l = p[S l + j] for l < count, 0 past it: count rows of S floats
template <int S>
inline void load_columns(const float* p, int count, vf (&columns)[S]) {
  if constexpr (S > 1) {
    if (count == LANES) {
      vf rows[S];
      std::memcpy(rows, p, sizeof rows);
      columns_of<S>(rows, columns);
      return;
    }
  }
  for (int j = 0; j < S; ++j) columns[j] = load_rows(p + j, S, count);
}

// p[S l + j] = columns[j] lane l, for l < count
template <int S>
inline void store_columns(float* p, int count, const vf (&columns)[S]) {
  if constexpr (S > 1) {
    if (count == LANES) {
      vf rows[S];
      rows_of<S>(columns, rows);
      std::memcpy(p, rows, sizeof rows);
      return;
    }
  }
  for (int j = 0; j < S; ++j) store_rows(p + j, S, count, columns[j]);
}

// One stage of a LANES x LANES transpose: of each pair of rows B apart, the sub-blocks of side B off
// the diagonal trade places.
template <int B, int... L>
inline void swap_blocks(vf& a, vf& b, std::integer_sequence<int, L...>) {
  const vf first = __builtin_shufflevector(a, b, ((L & B) ? L - B + LANES : L)...);
  const vf second = __builtin_shufflevector(a, b, ((L & B) ? L + LANES : L + B)...);
  a = first, b = second;
}

template <int B = LANES / 2>
inline void transpose(vf* rows) {
  for (int r = 0; r < LANES; ++r)
    if ((r & B) == 0) swap_blocks<B>(rows[r], rows[r + B], std::make_integer_sequence<int, LANES>{});
  if constexpr (B > 1) transpose<B / 2>(rows);
}

// columns[j] lane l = p[stride l + j], for j and l < LANES: a LANES x LANES block of rows `stride`
// floats apart, by LANES loads and log2(LANES) stages of shuffles, where a lane at a time took LANES^2
// loads
inline void load_block(const float* p, int64_t stride, vf* columns) {
  for (int l = 0; l < LANES; ++l) std::memcpy(&columns[l], p + stride * l, sizeof(vf));
  transpose(columns);
}
