// TinySplat's compiled CPU rasterizer: the compositing of rasterize_torch.py (gsplat 1.4's rule:
// front to back, alpha = min(0.999, o * exp(-sigma)), skip alpha < 1/255, stop a pixel before its
// transmittance falls to 1e-4) as one loop per tile. Tiles are shared out among ATen's threads
// (torch.set_num_threads, torch's own OpenMP runtime: no second runtime in the process); inside a
// tile one Gaussian at a time meets all of the tile's pixels, eight at a time in vector registers.
// The backward pass walks each tile back to front from each pixel's last drawn Gaussian and
// recovers the transmittance by division, as gsplat's CUDA kernel does.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "lanes.h"
#include "parallel.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

namespace {

constexpr float ALPHA_MAX = 0.999f;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float T_MIN = 1e-4f;
constexpr int MAX_TILE = 16;

constexpr int MAX_VECTORS = MAX_TILE * MAX_TILE / LANES;

// The lane sums of many vectors at once: each step adds the halves of two vectors into one (lanes
// [0, B) of each 2B-lane group from x, [B, 2B) from y), LANES - 1 steps of two shuffles and an add
// for LANES vectors, against log2(LANES) steps and their extracts for each vector by itself. The sum
// of input slot j ends in lane bit_reversed(j).
template <int B>
constexpr int half_index(int lane) {
  return lane / (2 * B) * 2 * B + lane % B + (lane % (2 * B) < B ? 0 : LANES);
}

template <int B, int... L>
inline vf add_halves(vf x, vf y, std::integer_sequence<int, L...>) {
  return __builtin_shufflevector(x, y, half_index<B>(L)...) + __builtin_shufflevector(x, y, (half_index<B>(L) + B)...);
}

template <int B>
inline void fold_halves(vf* v) {  // 2B vectors in, B out
  for (int j = 0; j < B; ++j) v[j] = add_halves<B>(v[2 * j], v[2 * j + 1], std::make_integer_sequence<int, LANES>{});
  if constexpr (B > 1) fold_halves<B / 2>(v);
}

constexpr int bit_reversed(int lane) {
  int r = 0;
  for (int bit = 1; bit < LANES; bit <<= 1) r = r << 1 | ((lane & bit) != 0);
  return r;
}

// row[k] += the lane sum of sums[k], for k < K
template <int K>
inline void add_lane_sums(float* row, const vf (&sums)[K]) {
  for (int k0 = 0; k0 < K; k0 += LANES) {
    vf v[LANES];
    for (int j = 0; j < LANES; ++j) v[j] = k0 + bit_reversed(j) < K ? sums[k0 + bit_reversed(j)] : vf{};
    fold_halves<LANES / 2>(v);
    for (int l = 0; l < LANES && k0 + l < K; ++l) row[k0 + l] += v[0][l];
  }
}

// exp(x) for x <= 0, lane by lane: Cody-Waite reduction to [-ln2/2, ln2/2], Cephes' degree-5
// polynomial, 2^n from the exponent bits. Relative error about 2e-7. Below -30 it returns exp(-30),
// 9e-14: an alpha that small is never drawn, and stopping there keeps clear of denormal numbers,
// which are slow.
inline vf exp_nonpositive(vf x) {
#ifdef TINYSPLAT_AVX512
  // the same steps in fewer instructions: max/min keep a NaN (it is their second operand), the floor
  // is one rounding and 2^n one scaling
  const __m512 clamped =
      _mm512_min_ps(_mm512_set1_ps(0.0f), _mm512_max_ps(_mm512_set1_ps(-30.0f), reinterpret_cast<const __m512&>(x)));
  x = reinterpret_cast<const vf&>(clamped);
  const vf u = x * 1.44269504088896341f + 0.5f;
  const __m512 n512 =
      _mm512_roundscale_ps(reinterpret_cast<const __m512&>(u), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const vf n = reinterpret_cast<const vf&>(n512);
#elif defined(TINYSPLAT_AVX)
  // as with AVX-512: min/max for the clamps, one rounding for the floor
  const __m256 clamped =
      _mm256_min_ps(_mm256_set1_ps(0.0f), _mm256_max_ps(_mm256_set1_ps(-30.0f), reinterpret_cast<const __m256&>(x)));
  x = reinterpret_cast<const vf&>(clamped);
  const vf u = x * 1.44269504088896341f + 0.5f;
  const __m256 floored = _mm256_round_ps(reinterpret_cast<const __m256&>(u), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const vf n = reinterpret_cast<const vf&>(floored);
#else
  x = x < -30.0f ? splat(-30.0f) : (x > 0.0f ? splat(0.0f) : x);
  const vf u = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(u, vi), vf);  // truncates towards zero
  n = n > u ? n - 1.0f : n;  // floor
#endif
  const vf r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const vf e = p * r * r + r + 1.0f;
#ifdef TINYSPLAT_AVX512
  const __m512 scaled = _mm512_scalef_ps(reinterpret_cast<const __m512&>(e), n512);
  return reinterpret_cast<const vf&>(scaled);
#else
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return e * reinterpret_cast<const vf&>(bits);
#endif
}

// 1 / x for the backward pass's one division a pair: with AVX-512, its reciprocal estimate (2^-14)
// and one Newton step, float rounding at a fraction of a 16-lane division's cost; a division elsewhere
// (AVX's 2^-12 estimate left errors of 2e-5 in the gradients at 200k Gaussians).
inline vf reciprocal(vf x) {
#ifdef TINYSPLAT_AVX512
  const __m512 estimate512 = _mm512_rcp14_ps(reinterpret_cast<const __m512&>(x));
  const vf estimate = reinterpret_cast<const vf&>(estimate512);
  return estimate * (2.0f - x * estimate);
#else
  return 1.0f / x;
#endif
}

// The allocator of the kernels' scratch arrays: a vector of n elements leaves them uninitialised
// (default-initialised), not zero-filled. Each array is written whole before it is read, and at 200k
// Gaussians zero-filling them first was a pass over 25 MB.
template <typename T>
struct Uninitialized : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = Uninitialized<U>;
  };
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <typename T>
using Scratch = std::vector<T, Uninitialized<T>>;

struct Plan {
  const int64_t* tile_ids;
  const int64_t* tile_start;
  const int64_t* tile_count;
  const int32_t* isect_gids;  // int32: half the memory traffic of the lists
  int64_t n_tiles;
  int width, height, tile_size, tiles_x;
};

struct Gaussians {
  const float* means2d;  // [N, 2]
  const float* conics;  // [N, 3]: a, b, c with sigma = a/2 dx^2 + b dx dy + c/2 dy^2
  const float* colors;  // [N, D]
  const float* opacities;  // [N]
};

// A tile's Gaussians come in depth order, from random places in their arrays: their values (and in
// the backward pass their gradient rows) are asked for a few list entries ahead, so that the cache
// misses of the next ones overlap the pixel work of this one.
constexpr int64_t PREFETCH_AHEAD = 4;

template <int D>
inline void prefetch_gaussian(const Gaussians& g, int64_t gid) {
  __builtin_prefetch(g.means2d + 2 * gid);
  __builtin_prefetch(g.conics + 3 * gid);
  __builtin_prefetch(g.colors + D * gid);
  __builtin_prefetch(g.opacities + gid);
}

// How many workers share the tiles: ATen's threads (torch.set_num_threads), fewer for few tiles.
int64_t tile_workers(int64_t n_tiles) { return std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(n_tiles, 1)); }

// Worker w takes tiles w, w + W, w + 2W, ... of the plan's list, which runs from most Gaussians to
// fewest, so the shares come out about even; and which worker adds which gradient depends only on W,
// so a backward pass is repeatable.
template <typename Fn>
void for_each_tile(int64_t n_tiles, const Fn& fn) {
  const int64_t workers = tile_workers(n_tiles);
  tinysplat::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      for (int64_t t = w; t < n_tiles; t += workers) fn(t, w);
    }
  });
}

// The pixels of one tile, row-major, in vectors of LANES: their centres, their offsets in the image
// (-1 for padding: outside the image, or past the tile's last pixel) and how many vectors there are.
struct TilePixels {
  vf x[MAX_VECTORS], y[MAX_VECTORS];
  int64_t index[MAX_VECTORS * LANES];
  int vectors;

  TilePixels(const Plan& plan, int64_t tile) {
    const int ts = plan.tile_size;
    const int x0 = static_cast<int>(tile % plan.tiles_x) * ts, y0 = static_cast<int>(tile / plan.tiles_x) * ts;
    vectors = (ts * ts + LANES - 1) / LANES;
    for (int p = 0; p < vectors * LANES; ++p) {
      const int px = x0 + p % ts, py = y0 + p / ts;
      x[p / LANES][p % LANES] = px + 0.5f;
      y[p / LANES][p % LANES] = py + 0.5f;
      const bool inside = p < ts * ts && px < plan.width && py < plan.height;
      index[p] = inside ? static_cast<int64_t>(py) * plan.width + px : -1;
    }
  }
};

struct Gaussian {
  float mx, my, a, b, c, o;

  Gaussian(const Gaussians& g, int64_t gid)
      : mx(g.means2d[2 * gid]), my(g.means2d[2 * gid + 1]), a(g.conics[3 * gid]), b(g.conics[3 * gid + 1]),
        c(g.conics[3 * gid + 2]), o(g.opacities[gid]) {}

  // its alpha at the pixels of (dx, dy) from its mean, as composited (clamped at ALPHA_MAX), and exp(-sigma)
  inline vf alpha(vf dx, vf dy, vf& vis) const {
    const vf sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
    vis = exp_nonpositive(-sigma);
    const vf alpha = o * vis;
    return alpha > ALPHA_MAX ? splat(ALPHA_MAX) : alpha;  // a NaN stays NaN
  }
};

// The largest sigma at which a Gaussian of this opacity still draws (alpha >= 1/255): log(255 o).
inline double sigma_max(float opacity) {
  return std::log(std::max(static_cast<double>(opacity), static_cast<double>(ALPHA_MIN)) * 255.0);
}

// s widened by a millionth of the quadratic terms' size at the rim (2 s a c / det, large for a thin
// Gaussian) and by 1e-5: more than float32 rounding moves the kernels' sigma, so an ellipse bounded with
// it keeps every pixel that the per-pixel test draws.
inline double widened(double s, double a, double c, double det) { return s * (1.0 + 2e-6 * a * c / det) + 1e-5; }

// The pixel rows a Gaussian can draw in: centres y in [lo, hi], its alpha >= 1/255 ellipse's extent
// in y, widened as row_tiles widens it (and by a hundredth of a pixel), so that a tile's loops over its
// pixels skip the vectors of rows it cannot draw in, whose pixels would have left everything as it was.
// Unbounded (a conic that is not positive definite or not finite): every row.
struct RowReach {
  float lo, hi;
};

Scratch<RowReach> row_reach(const Gaussians& g, int64_t n) {
  Scratch<RowReach> reach(n);
  tinysplat::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double a = g.conics[3 * i], b = g.conics[3 * i + 1], c = g.conics[3 * i + 2];
      const double det = a * c - b * b, y = g.means2d[2 * i + 1];
      const double half_y = std::sqrt(2.0 * widened(sigma_max(g.opacities[i]), a, c, det) * a / det) + 0.01;
      const bool bounded = det > 0.0 && a > 0.0 && half_y <= DBL_MAX && std::abs(y) <= DBL_MAX;
      reach[i] = bounded ? RowReach{static_cast<float>(y - half_y), static_cast<float>(y + half_y)}
                         : RowReach{-INFINITY, INFINITY};
    }
  });
  return reach;
}

// The vectors [first, last] of a tile's pixels (TilePixels) that hold the rows a Gaussian reaches.
struct VectorRange {
  int first, last;

  VectorRange(RowReach r, const TilePixels& pix, int ts) {
    const int vectors = pix.vectors;
    const float y0 = pix.y[0][0];  // the first row's centre
    const float top = std::max(std::ceil(r.lo - y0), 0.0f), bottom = std::min(std::floor(r.hi - y0), ts - 1.0f);
    first = top <= bottom ? static_cast<int>(top) * ts / LANES : vectors;
    last = top <= bottom ? std::min((static_cast<int>(bottom) + 1) * ts - 1, vectors * LANES - 1) / LANES : -1;
  }
};

template <int D>
void forward(const Plan& plan, const Gaussians& g, const float* background, float* image, float* alpha_img,
             int32_t* last_img, float* t_final_img, int64_t n_gaussians) {
  const Scratch<RowReach> reach = row_reach(g, n_gaussians);
  for_each_tile(plan.n_tiles, [&](int64_t t, int64_t) {
    const TilePixels pix(plan, plan.tile_ids[t]);
    const int V = pix.vectors;
    vf T[MAX_VECTORS], acc[D][MAX_VECTORS];
    vi done[MAX_VECTORS], last[MAX_VECTORS];
    for (int v = 0; v < V; ++v) {
      T[v] = splat(1.0f);
      last[v] = vi{};
      for (int l = 0; l < LANES; ++l) done[v][l] = pix.index[v * LANES + l] < 0 ? -1 : 0;  // padding: done
      for (int d = 0; d < D; ++d) acc[d][v] = vf{};
    }
    const int64_t start = plan.tile_start[t], count = plan.tile_count[t];
    for (int64_t k = 0; k < count; ++k) {
      if (k + PREFETCH_AHEAD < count) {
        const int64_t ahead = plan.isect_gids[start + k + PREFETCH_AHEAD];
        prefetch_gaussian<D>(g, ahead);
        __builtin_prefetch(&reach[ahead]);
      }
      const int64_t gid = plan.isect_gids[start + k];
      const Gaussian gs(g, gid);
      float col[D];
      for (int d = 0; d < D; ++d) col[d] = g.colors[D * gid + d];
      const int32_t drawn_count = static_cast<int32_t>(k + 1);
      const VectorRange rows(reach[gid], pix, plan.tile_size);
      for (int v = rows.first; v <= rows.last; ++v) {
        vf vis;
        const vf alpha = gs.alpha(pix.x[v] - gs.mx, pix.y[v] - gs.my, vis);
        const vf next_t = T[v] * (1.0f - alpha);
        // written so that a NaN alpha is drawn: it reaches the image, where the trainer's check sees it
        const vi considered = ~done[v] & ~(alpha < ALPHA_MIN);
        const vi stop = considered & (next_t <= T_MIN);
        const vi draw = considered & ~stop;
        const vf w = draw ? alpha * T[v] : vf{};
        for (int d = 0; d < D; ++d) acc[d][v] += w * col[d];
        T[v] = draw ? next_t : T[v];
        last[v] = draw ? vi{} + drawn_count : last[v];
        done[v] |= stop;
      }
      vi open{};
      for (int v = 0; v < V; ++v) open |= ~done[v];
      if (!any_lane(open)) break;
    }
    for (int p = 0; p < V * LANES; ++p) {
      const int64_t i = pix.index[p];
      if (i < 0) continue;
      const int v = p / LANES, l = p % LANES;
      const float tp = T[v][l];
      for (int d = 0; d < D; ++d) image[D * i + d] = acc[d][v][l] + (background ? tp * background[d] : 0.0f);
      alpha_img[i] = 1.0f - tp;
      last_img[i] = last[v][l];
      t_final_img[i] = tp;
    }
  });
}

constexpr int backward_row_size(int64_t D, bool with_absgrad) { return 6 + D + (with_absgrad ? 2 : 0); }
constexpr int MAX_ROW = backward_row_size(4, true);

// Gradients per Gaussian, one row each: mean x, mean y, conic a, b, c, opacity, D colours and,
// WithAbsgrad, |d mean x|, |d mean y|; each worker adds into its own copy, v_rows [workers, N, K].
// Without the absolute sums (gsplat's default) the accumulators fit the AVX registers better.
template <int D, bool WithAbsgrad>
void backward(const Plan& plan, const Gaussians& g, const float* background, const int32_t* last_img,
              const float* t_final_img, const float* v_image, const float* v_alpha_img, int64_t n_gaussians,
              float* v_rows) {
  constexpr int K = backward_row_size(D, WithAbsgrad);
  const Scratch<RowReach> reach = row_reach(g, n_gaussians);
  for_each_tile(plan.n_tiles, [&](int64_t t, int64_t worker) {
    const TilePixels pix(plan, plan.tile_ids[t]);
    const int V = pix.vectors;
    vf T[MAX_VECTORS], behind[MAX_VECTORS], gp[D][MAX_VECTORS];
    vi last[MAX_VECTORS];
    int32_t n_back = 0;
    for (int p = 0; p < V * LANES; ++p) {
      const int64_t i = pix.index[p];
      const int v = p / LANES, l = p % LANES;
      if (i < 0) {
        T[v][l] = 1.0f, behind[v][l] = 0.0f, last[v][l] = 0;
        for (int d = 0; d < D; ++d) gp[d][v][l] = 0.0f;
        continue;
      }
      T[v][l] = t_final_img[i];
      last[v][l] = last_img[i];
      n_back = std::max(n_back, last_img[i]);
      // what lies behind every Gaussian of the pixel: the background, and the alpha output's -T
      float bg_dot = 0.0f;
      for (int d = 0; d < D; ++d) {
        gp[d][v][l] = v_image[D * i + d];
        if (background) bg_dot += background[d] * v_image[D * i + d];
      }
      behind[v][l] = t_final_img[i] * (bg_dot - v_alpha_img[i]);
    }
    const int64_t start = plan.tile_start[t];
    for (int64_t k = n_back - 1; k >= 0; --k) {
      if (k >= PREFETCH_AHEAD) {
        const int64_t ahead = plan.isect_gids[start + k - PREFETCH_AHEAD];
        prefetch_gaussian<D>(g, ahead);
        __builtin_prefetch(&reach[ahead]);
        float* row = v_rows + (worker * n_gaussians + ahead) * K;
        __builtin_prefetch(row, 1), __builtin_prefetch(row + K - 1, 1);
      }
      const int64_t gid = plan.isect_gids[start + k];
      const Gaussian gs(g, gid);
      float col[D];
      for (int d = 0; d < D; ++d) col[d] = g.colors[D * gid + d];
      const int32_t index = static_cast<int32_t>(k);
      vf s_mx{}, s_my{}, s_a{}, s_b{}, s_c{}, s_o{}, s_absx{}, s_absy{}, s_col[D];
      for (int d = 0; d < D; ++d) s_col[d] = vf{};
      const VectorRange rows(reach[gid], pix, plan.tile_size);
      for (int v = rows.first; v <= rows.last; ++v) {
        const vf dx = pix.x[v] - gs.mx, dy = pix.y[v] - gs.my;
        vf vis;
        const vf alpha = gs.alpha(dx, dy, vis);
        const vi drawn = (index < last[v]) & ~(alpha < ALPHA_MIN);
        const vf ra = reciprocal(1.0f - alpha);
        const vf t_before = drawn ? T[v] * ra : T[v];
        const vf w = drawn ? alpha * t_before : vf{};
        vf color_dot{};
        for (int d = 0; d < D; ++d) {
          color_dot += col[d] * gp[d][v];
          s_col[d] += w * gp[d][v];
        }
        // dL/dalpha = T (c . g) - (what is composited behind, dotted with g) / (1 - alpha)
        const vf v_alpha = t_before * color_dot - behind[v] * ra;
        behind[v] = drawn ? behind[v] + w * color_dot : behind[v];
        T[v] = t_before;
        const vi flows = drawn & (alpha < ALPHA_MAX);  // no gradient through the clamp
        const vf v_sigma = flows ? -v_alpha * alpha : vf{};
        s_o += flows ? v_alpha * vis : vf{};
        s_a += 0.5f * dx * dx * v_sigma;
        s_b += dx * dy * v_sigma;
        s_c += 0.5f * dy * dy * v_sigma;
        const vf v_mx = -(gs.a * dx + gs.b * dy) * v_sigma, v_my = -(gs.b * dx + gs.c * dy) * v_sigma;
        s_mx += v_mx;
        s_my += v_my;
        if constexpr (WithAbsgrad) {
          s_absx += v_mx < 0.0f ? -v_mx : v_mx;
          s_absy += v_my < 0.0f ? -v_my : v_my;
        }
      }
      vf sums[K] = {s_mx, s_my, s_a, s_b, s_c, s_o};
      for (int d = 0; d < D; ++d) sums[6 + d] = s_col[d];
      if constexpr (WithAbsgrad) sums[6 + D] = s_absx, sums[7 + D] = s_absy;
      add_lane_sums<K>(v_rows + (worker * n_gaussians + gid) * K, sums);
    }
  });
}

// Where each worker's items go in a counting sort by bucket: counts [workers, buckets] in, each
// worker's first slot per bucket out (bucket by bucket, worker by worker within it: a stable sort);
// returns the number of items.
int64_t worker_offsets(std::vector<int64_t>& counts, int64_t workers, int64_t buckets) {
  int64_t total = 0;
  for (int64_t b = 0; b < buckets; ++b)
    for (int64_t w = 0; w < workers; ++w) {
      const int64_t n = counts[w * buckets + b];
      counts[w * buckets + b] = total;
      total += n;
    }
  return total;
}

// The Gaussians that touch a tile (rect[4i + 2] > 0), nearest first, ties in index order, each as its
// depth's bits above its index in one 64-bit item: an LSD radix sort on the depths' bits (a drawn
// Gaussian lies past the near plane, and the bits of positive floats sort as the floats do), several
// times faster than torch.argsort here. Three passes of 11 bits, each moving one item per Gaussian
// (four passes of 8 bits over separate key and index arrays took 1.3 ms at 200k Gaussians); each
// pass's counts and scatter split among the workers, and a pass whose digit all keys share skipped
// (the top one, the sign, the exponent and the mantissa's first bit, is one value for all depths in
// [4, 6), say).
Scratch<uint64_t> drawn_by_depth(const Scratch<int32_t>& rect, const float* depths, int64_t workers) {
  constexpr int DIGIT_BITS = 11, BUCKETS = 1 << DIGIT_BITS;
  const int64_t N = static_cast<int64_t>(rect.size() / 4);
  std::vector<int64_t> slots(workers * BUCKETS);
  tinysplat::for_each_piece(N, workers, [&](int64_t w, int64_t begin, int64_t end) {
    int64_t drawn = 0;
    for (int64_t i = begin; i < end; ++i) drawn += rect[4 * i + 2] > 0;
    slots[w] = drawn;
  });
  const int64_t n = worker_offsets(slots, workers, 1);
  Scratch<uint64_t> items(n), other(n);
  tinysplat::for_each_piece(N, workers, [&](int64_t w, int64_t begin, int64_t end) {
    int64_t to = slots[w];
    for (int64_t i = begin; i < end; ++i) {
      if (rect[4 * i + 2] <= 0) continue;
      uint32_t key;
      std::memcpy(&key, &depths[i], sizeof key);
      items[to++] = static_cast<uint64_t>(key) << 32 | static_cast<uint32_t>(i);
    }
  });
  for (int shift = 32; shift < 64; shift += DIGIT_BITS) {
    std::fill(slots.begin(), slots.end(), 0);
    tinysplat::for_each_piece(n, workers, [&](int64_t w, int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) ++slots[w * BUCKETS + ((items[k] >> shift) & (BUCKETS - 1))];
    });
    bool one_value = false;
    for (int64_t b = 0; b < BUCKETS && !one_value; ++b) {
      int64_t in_bucket = 0;
      for (int64_t w = 0; w < workers; ++w) in_bucket += slots[w * BUCKETS + b];
      one_value = in_bucket == n;
    }
    if (one_value) continue;
    worker_offsets(slots, workers, BUCKETS);
    tinysplat::for_each_piece(n, workers, [&](int64_t w, int64_t begin, int64_t end) {
      int64_t* slot = &slots[w * BUCKETS];
      for (int64_t k = begin; k < end; ++k) other[slot[(items[k] >> shift) & (BUCKETS - 1)]++] = items[k];
    });
    items.swap(other);
  }
  return items;
}

struct DrawnRect {
  int32_t id, y0, ny;  // a Gaussian and its tile rows: ny down from y0
  int64_t first_row;   // its rows' spans, one after another in `RowTiles`
};

struct RowTiles {
  int32_t x0, nx;  // the tiles across one tile row that a Gaussian touches: nx from x0 (0: none)
};

struct RowSpan {
  int32_t id, x0, nx;  // a Gaussian's tiles in one tile row: nx across from x0
};

// fn(row, span) for each tile row that each Gaussian in [first, last) touches. Its own function, as the
// loops of sort_row: inside plan_tiles' lambdas the compiler kept the loops' counters on the stack.
template <typename Fn>
inline void for_each_row_of(const DrawnRect* first, const DrawnRect* last, const RowTiles* rows, Fn fn) {
  for (const DrawnRect* d = first; d < last; ++d) {
    const DrawnRect r = *d;
    for (int32_t k = 0; k < r.ny; ++k) {
      const RowTiles t = rows[r.first_row + k];
      if (t.nx > 0) fn(r.y0 + k, RowSpan{r.id, t.x0, t.nx});
    }
  }
}

// One tile row's lists: its spans in depth order in; each of its tiles' count and list of Gaussians
// out, the lists one after another from `start`; slot: room for tiles_x + 1.
void sort_row(const RowSpan* first, const RowSpan* last, int64_t tiles_x, int64_t start, int64_t* __restrict count,
              int64_t* __restrict slot, int32_t* __restrict out) {
  // the counts as differences (+1 where a span starts, -1 past its end) summed along the row: no
  // loop per span, whose exits (spans of 1 to a few tiles) the branch predictor misses
  std::fill(slot, slot + tiles_x + 1, 0);
  for (const RowSpan* s = first; s < last; ++s) ++slot[s->x0], --slot[s->x0 + s->nx];
  for (int64_t tx = 0, open = 0; tx < tiles_x; start += count[tx++]) {
    open += slot[tx];
    count[tx] = open;
    slot[tx] = start;
  }
  for (const RowSpan* s = first; s < last; ++s) {
    const RowSpan r = *s;
    for (int64_t tx = r.x0; tx < r.x0 + r.nx; ++tx) out[slot[tx]++] = r.id;
  }
}

// The tiles of Gaussians [begin, end): first tile x, y and tiles across, down into rect (0 across: not
// drawn), the rule of plan_tiles below. The arithmetic goes without branches (or integer division), so
// the compiler takes several Gaussians at a time; the logs, which it cannot, are a loop of their own.
void tile_rects(int64_t begin, int64_t end, const float* __restrict m, const float* __restrict cn,
                const float* __restrict op, const int32_t* __restrict rad, int64_t width, int64_t height,
                int64_t tile_size, int32_t* __restrict rect, double* __restrict s_max) {
  constexpr int64_t BLOCK = 256;
  const double ts = static_cast<double>(tile_size), last_x = width - 1.0, last_y = height - 1.0;
  for (int64_t first = begin; first < end; first += BLOCK) {
    const int64_t n = std::min(BLOCK, end - first);
    for (int64_t i = first; i < first + n; ++i) s_max[i] = sigma_max(op[i]);
    for (int64_t i = first; i < first + n; ++i) {
      const double a = cn[3 * i], b = cn[3 * i + 1], c = cn[3 * i + 2], o = op[i];
      const double u = m[2 * i], v = m[2 * i + 1];
      const double det = a * c - b * b;
      const double half_x = det > 0 ? std::sqrt(2.0 * s_max[i] * c / det) + 0.01 : INFINITY;
      const double half_y = det > 0 ? std::sqrt(2.0 * s_max[i] * a / det) + 0.01 : INFINITY;
      const double j0 = std::max(std::ceil(u - half_x - 0.5), 0.0);
      const double j1 = std::min(std::floor(u + half_x - 0.5), last_x);
      const double i0 = std::max(std::ceil(v - half_y - 0.5), 0.0);
      const double i1 = std::min(std::floor(v + half_y - 0.5), last_y);
      const bool drawn = (rad[i] > 0) & (o >= ALPHA_MIN) & (std::abs(u) <= DBL_MAX) & (std::abs(v) <= DBL_MAX) &
                         (j0 <= j1) & (i0 <= i1);
      // whole pixel indices from 0 up, so the quotients' floors are the integer quotients
      const double tx0 = std::floor((drawn ? j0 : 0.0) / ts), tx1 = std::floor((drawn ? j1 : 0.0) / ts);
      const double ty0 = std::floor((drawn ? i0 : 0.0) / ts), ty1 = std::floor((drawn ? i1 : 0.0) / ts);
      rect[4 * i] = static_cast<int32_t>(tx0);
      rect[4 * i + 1] = static_cast<int32_t>(ty0);
      rect[4 * i + 2] = drawn ? static_cast<int32_t>(tx1 - tx0) + 1 : 0;
      rect[4 * i + 3] = static_cast<int32_t>(ty1 - ty0) + 1;
    }
  }
}

// The tiles across that Gaussian i's alpha >= 1/255 ellipse touches in each of its rect's tile rows,
// within the rect's columns (all of them where the rect is one tile wide), into out[0, rows). At the
// pixel centre (u + dx, v + dy) the ellipse is a dx^2 + 2 b dx dy + c dy^2 <= 2 s; along a pixel row (dy
// fixed) it spans dx = (-b dy +- sqrt(2 s a - det dy^2)) / a, widest to the right at
// dy = -b sqrt(2 s / (det c)) and to the left at the opposite dy, so over a tile row's pixel centres
// each end lies at that dy clamped into them, with s widened (`widened`).
// rasterize_torch._row_tiles computes the same, operation for operation.
void row_tiles(int64_t i, const int32_t* rect, const float* __restrict m, const float* __restrict cn,
               const double* __restrict s_max, int64_t width, int64_t height, int64_t tile_size,
               RowTiles* __restrict out) {
  const int32_t x0 = rect[0], ty0 = rect[1], nx = rect[2], ny = rect[3];
  const double a = cn[3 * i], b = cn[3 * i + 1], c = cn[3 * i + 2], u = m[2 * i], v = m[2 * i + 1];
  const double det = a * c - b * b;
  if (nx == 1 || !(det > 0.0 && a > 0.0)) {  // nothing to narrow; or unbounded, given the whole image
    for (int32_t y = 0; y < ny; ++y) out[y] = {x0, nx};
    return;
  }
  const double s = widened(s_max[i], a, c, det);
  const double half_y = std::sqrt(2.0 * s * a / det), turn = b * std::sqrt(2.0 * s / (det * c));
  const double ts = static_cast<double>(tile_size), last_x = static_cast<double>(x0 + nx - 1);
  for (int32_t y = 0; y < ny; ++y) {
    const double top = static_cast<double>(ty0 + y) * ts + 0.5 - v;
    const double row_end = std::min(static_cast<double>(ty0 + y) * ts + ts, static_cast<double>(height));
    const double bottom = row_end - 0.5 - v;
    const double lo = std::max(top, -half_y), hi = std::min(bottom, half_y);
    const double right = std::min(std::max(-turn, lo), hi), left = std::min(std::max(turn, lo), hi);
    const double x_right = (-b * right + std::sqrt(std::max(2.0 * s * a - det * right * right, 0.0))) / a;
    const double x_left = (-b * left - std::sqrt(std::max(2.0 * s * a - det * left * left, 0.0))) / a;
    const double j0 = std::ceil(u + x_left - 0.01 - 0.5), j1 = std::floor(u + x_right + 0.01 - 0.5);
    const double first = std::max(std::floor(j0 / ts), static_cast<double>(x0));
    const double last = std::min(std::floor(std::min(j1, width - 1.0) / ts), last_x);
    const bool touched = top <= half_y && bottom >= -half_y && first <= last;
    out[y] = {static_cast<int32_t>(touched ? first : x0), touched ? static_cast<int32_t>(last - first) + 1 : 0};
  }
}

// Which tiles each Gaussian touches, exactly as rasterize_torch.plan_tiles decides (in float64: the
// alpha >= 1/255 ellipse's axis-aligned extent, a hundredth of a pixel of slack, then its tiles row by
// row: on lego at 800x800, 28% fewer (tile, Gaussian) pairs than the whole boxes), and every tile's
// list of Gaussians front to back: a counting sort of the Gaussians taken in depth order, so no sort
// of the (tile, Gaussian) pairs is needed. It sorts in two levels: first each Gaussian's span in each
// tile row into that row's list (a few dozen rows: each worker writes as many streams), then each row
// by itself into its tiles. One level, each worker writing to all of the tiles' lists at once (1900 at
// 400x300 in tiles of 8: more open cache lines than L1 holds), took 6.4-7.5 ms at 200k Gaussians
// against 4.6-5.0 (counts and scatters, AMD EPYC, 2 threads).
std::tuple<at::Tensor, at::Tensor> plan_tiles(const at::Tensor& means2d, const at::Tensor& conics,
                                              const at::Tensor& opacities, const at::Tensor& radii,
                                              const at::Tensor& depths, int64_t width, int64_t height,
                                              int64_t tile_size) {
  for (const auto* t : {&means2d, &conics, &opacities, &depths}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(), "Gaussians must be contiguous float32");
  }
  TORCH_CHECK(radii.is_contiguous(), "radii must be contiguous");
  const at::Tensor radii_i = radii.to(at::kInt);
  const int64_t N = means2d.size(0);
  TORCH_CHECK(N <= INT32_MAX, "the compiled tile plan takes up to 2^31 - 1 Gaussians");
  const int64_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
  const int64_t n_tiles = tiles_x * tiles_y;
  const float* m = means2d.data_ptr<float>();
  const float* cn = conics.data_ptr<float>();
  const float* op = opacities.data_ptr<float>();
  const int32_t* rad = radii_i.data_ptr<int32_t>();
  Scratch<int32_t> rect(4 * N);  // first tile x, y and tiles across, down; 0 across = not drawn
  Scratch<double> s_max(N);
  tinysplat::parallel_for(0, N, 4096, [&](int64_t begin, int64_t end) {
    tile_rects(begin, end, m, cn, op, rad, width, height, tile_size, rect.data(), s_max.data());
  });
  const int64_t workers = at::get_num_threads();
  const Scratch<uint64_t> order = drawn_by_depth(rect, depths.data_ptr<float>(), workers);
  const int64_t n_drawn = static_cast<int64_t>(order.size());
  // the drawn Gaussians' rectangles in depth order (the passes below read them in turn, not at random),
  // each followed by the tiles it touches in each of its rows
  Scratch<DrawnRect> drawn(n_drawn);
  int64_t n_rows = 0;
  for (int64_t k = 0; k < n_drawn; ++k) {
    const int32_t id = static_cast<int32_t>(order[k] & UINT32_MAX);
    drawn[k] = {id, rect[4 * id + 1], rect[4 * id + 3], n_rows};
    n_rows += rect[4 * id + 3];
  }
  Scratch<RowTiles> rows(n_rows);
  tinysplat::parallel_for(0, n_drawn, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      if (k + 16 < end) {  // the Gaussians come in depth order, at random in memory
        const int64_t ahead = drawn[k + 16].id;
        __builtin_prefetch(cn + 3 * ahead), __builtin_prefetch(m + 2 * ahead), __builtin_prefetch(&s_max[ahead]);
        __builtin_prefetch(&rect[4 * ahead]);
      }
      const DrawnRect d = drawn[k];
      row_tiles(d.id, &rect[4 * d.id], m, cn, s_max.data(), width, height, tile_size, rows.data() + d.first_row);
    }
  });
  // each worker's spans and intersections per tile row, then its first slot in the rows' spans
  std::vector<int64_t> row_slots(workers * tiles_y, 0), row_isects(workers * tiles_y, 0);
  tinysplat::for_each_piece(n_drawn, workers, [&](int64_t w, int64_t begin, int64_t end) {
    int64_t* __restrict spans = &row_slots[w * tiles_y];
    int64_t* __restrict isects = &row_isects[w * tiles_y];
    for_each_row_of(drawn.data() + begin, drawn.data() + end, rows.data(), [spans, isects](int64_t ty, RowSpan r) {
      ++spans[ty], isects[ty] += r.nx;
    });
  });
  std::vector<int64_t> row_start(tiles_y + 1), isect_start(tiles_y + 1, 0);
  row_start[tiles_y] = worker_offsets(row_slots, workers, tiles_y);
  for (int64_t ty = 0; ty < tiles_y; ++ty) {
    row_start[ty] = row_slots[ty];  // worker 0's first slot in the row
    isect_start[ty + 1] = isect_start[ty];
    for (int64_t w = 0; w < workers; ++w) isect_start[ty + 1] += row_isects[w * tiles_y + ty];
  }
  Scratch<RowSpan> spans(row_start[tiles_y]);
  tinysplat::for_each_piece(n_drawn, workers, [&](int64_t w, int64_t begin, int64_t end) {
    int64_t* __restrict slot = &row_slots[w * tiles_y];
    RowSpan* __restrict to = spans.data();
    for_each_row_of(drawn.data() + begin, drawn.data() + end, rows.data(), [slot, to](int64_t ty, RowSpan r) {
      to[slot[ty]++] = r;
    });
  });
  auto i64 = depths.options().dtype(at::kLong);
  const int64_t n_isects = isect_start[tiles_y];
  at::Tensor per_tile = at::zeros({n_tiles}, i64);
  at::Tensor isect_gids = at::empty({n_isects}, i64.dtype(at::kInt));
  int64_t* tile_count = per_tile.data_ptr<int64_t>();
  int32_t* __restrict out = isect_gids.data_ptr<int32_t>();
  // worker w sorts the rows whose intersections start in the w-th of W even shares of them
  tinysplat::for_each_piece(n_isects, workers, [&](int64_t, int64_t begin, int64_t end) {
    std::vector<int64_t> tile_slots(tiles_x + 1);
    for (int64_t ty = 0; ty < tiles_y; ++ty) {
      if (isect_start[ty] < begin || isect_start[ty] >= end) continue;
      sort_row(spans.data() + row_start[ty], spans.data() + row_start[ty + 1], tiles_x, isect_start[ty],
               tile_count + ty * tiles_x, tile_slots.data(), out);
    }
  });
  return {per_tile, isect_gids};
}

Plan make_plan(const at::Tensor& tile_ids, const at::Tensor& tile_start, const at::Tensor& tile_count,
               const at::Tensor& isect_gids, int64_t width, int64_t height, int64_t tile_size) {
  TORCH_CHECK(tile_size >= 1 && tile_size <= MAX_TILE, "tile_size must be 1..", MAX_TILE);
  for (const auto* t : {&tile_ids, &tile_start, &tile_count}) {
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->device().is_cpu(),
                "plan tensors must be contiguous int64 CPU tensors");
  }
  TORCH_CHECK(isect_gids.scalar_type() == at::kInt && isect_gids.is_contiguous() && isect_gids.device().is_cpu(),
              "the plan's Gaussian ids must be a contiguous int32 CPU tensor (kernels/rasterize.py's plan_tiles)");
  const int ts = static_cast<int>(tile_size);
  return Plan{tile_ids.data_ptr<int64_t>(), tile_start.data_ptr<int64_t>(), tile_count.data_ptr<int64_t>(),
              isect_gids.data_ptr<int32_t>(), tile_ids.numel(), static_cast<int>(width), static_cast<int>(height),
              ts, static_cast<int>((width + ts - 1) / ts)};
}

Gaussians make_gaussians(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                         const at::Tensor& opacities) {
  for (const auto* t : {&means2d, &conics, &colors, &opacities}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "Gaussians must be contiguous float32 CPU tensors");
  }
  return Gaussians{means2d.data_ptr<float>(), conics.data_ptr<float>(), colors.data_ptr<float>(),
                   opacities.data_ptr<float>()};
}

const float* background_ptr(const std::optional<at::Tensor>& background, int64_t D) {
  if (!background.has_value()) return nullptr;
  TORCH_CHECK(background->scalar_type() == at::kFloat && background->is_contiguous() && background->numel() == D,
              "background must be a contiguous float32 tensor of ", D, " values");
  return background->data_ptr<float>();
}

#define DISPATCH_CHANNELS(D, ...)                                            \
  switch (D) {                                                               \
    case 1: { constexpr int kD = 1; __VA_ARGS__; break; }                    \
    case 2: { constexpr int kD = 2; __VA_ARGS__; break; }                    \
    case 3: { constexpr int kD = 3; __VA_ARGS__; break; }                    \
    case 4: { constexpr int kD = 4; __VA_ARGS__; break; }                    \
    default: TORCH_CHECK(false, "the compiled rasterizer takes 1 to 4 channels, got ", D); \
  }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rasterize_forward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors, const at::Tensor& opacities,
    const std::optional<at::Tensor>& background, const at::Tensor& tile_ids, const at::Tensor& tile_start,
    const at::Tensor& tile_count, const at::Tensor& isect_gids, int64_t width, int64_t height, int64_t tile_size) {
  const Plan plan = make_plan(tile_ids, tile_start, tile_count, isect_gids, width, height, tile_size);
  const Gaussians g = make_gaussians(means2d, conics, colors, opacities);
  const int64_t D = colors.size(1);
  const float* bg = background_ptr(background, D);
  auto f32 = means2d.options();
  // pixels of tiles that no Gaussian touches: background, alpha 0, transmittance 1
  at::Tensor image = bg ? background->reshape({1, 1, D}).expand({height, width, D}).contiguous()
                        : at::zeros({height, width, D}, f32);
  at::Tensor alpha = at::zeros({height, width, 1}, f32);
  at::Tensor last = at::zeros({height, width}, f32.dtype(at::kInt));
  at::Tensor t_final = at::ones({height, width}, f32);
  DISPATCH_CHANNELS(D, forward<kD>(plan, g, bg, image.data_ptr<float>(), alpha.data_ptr<float>(),
                                   last.data_ptr<int32_t>(), t_final.data_ptr<float>(), means2d.size(0)));
  return {image, alpha, last, t_final};
}

// The workers' gradient rows [W, N, R] summed into a contiguous tensor per input: means2d [N, 2],
// conics [N, 3], opacities [N], colors [N, D] and, with absgrad, |d means2d| [N, 2]. One pass; a sum
// and then each input's strided slice of it copied out (by autograd, which wants its own) took three.
std::vector<at::Tensor> split_rows(const at::Tensor& v_rows, int64_t D, bool absgrad) {
  const int64_t W = v_rows.size(0), N = v_rows.size(1), R = v_rows.size(2);
  const auto options = v_rows.options();
  std::vector<at::Tensor> out = {at::empty({N, 2}, options), at::empty({N, 3}, options), at::empty({N}, options),
                                 at::empty({N, D}, options)};
  if (absgrad) out.push_back(at::empty({N, 2}, options));
  const int64_t widths[5] = {2, 3, 1, D, 2};
  float* to[5];
  for (size_t k = 0; k < out.size(); ++k) to[k] = out[k].data_ptr<float>();
  const float* rows = v_rows.data_ptr<float>();
  tinysplat::parallel_for(0, N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float sum[MAX_ROW];
      for (int64_t j = 0; j < R; ++j) sum[j] = rows[n * R + j];
      for (int64_t w = 1; w < W; ++w)
        for (int64_t j = 0; j < R; ++j) sum[j] += rows[(w * N + n) * R + j];
      for (int64_t k = 0, j = 0; k < static_cast<int64_t>(out.size()); j += widths[k++])
        for (int64_t i = 0; i < widths[k]; ++i) to[k][n * widths[k] + i] = sum[j + i];
    }
  });
  return out;
}

std::vector<at::Tensor> rasterize_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                              const at::Tensor& opacities, const std::optional<at::Tensor>& background,
                              const at::Tensor& tile_ids, const at::Tensor& tile_start, const at::Tensor& tile_count,
                              const at::Tensor& isect_gids, int64_t width, int64_t height, int64_t tile_size,
                              const at::Tensor& last, const at::Tensor& t_final, const at::Tensor& v_image,
                              const at::Tensor& v_alpha, bool absgrad) {
  const Plan plan = make_plan(tile_ids, tile_start, tile_count, isect_gids, width, height, tile_size);
  const Gaussians g = make_gaussians(means2d, conics, colors, opacities);
  const int64_t D = colors.size(1);
  const float* bg = background_ptr(background, D);
  TORCH_CHECK(last.scalar_type() == at::kInt && last.is_contiguous(), "last must be contiguous int32");
  for (const auto* t : {&t_final, &v_image, &v_alpha}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(), "image gradients must be contiguous float32");
  }
  const int64_t N = means2d.size(0);
  at::Tensor v_rows = at::zeros({tile_workers(plan.n_tiles), N, backward_row_size(D, absgrad)}, means2d.options());
  const auto run = [&](auto with_absgrad) {
    DISPATCH_CHANNELS(D, backward<kD, with_absgrad()>(plan, g, bg, last.data_ptr<int32_t>(), t_final.data_ptr<float>(),
                                                      v_image.data_ptr<float>(), v_alpha.data_ptr<float>(), N,
                                                      v_rows.data_ptr<float>()));
  };
  if (absgrad) run(std::true_type{}); else run(std::false_type{});
  return split_rows(v_rows, D, absgrad);
}

}  // namespace

TORCH_LIBRARY(tinysplat_cpu, m) {
  m.def("rasterize_forward(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, Tensor? background, "
        "Tensor tile_ids, Tensor tile_start, Tensor tile_count, Tensor isect_gids, int width, int height, "
        "int tile_size) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("plan_tiles(Tensor means2d, Tensor conics, Tensor opacities, Tensor radii, Tensor depths, int width, "
        "int height, int tile_size) -> (Tensor, Tensor)");
  m.def("rasterize_backward(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, Tensor? background, "
        "Tensor tile_ids, Tensor tile_start, Tensor tile_count, Tensor isect_gids, int width, int height, "
        "int tile_size, Tensor last, Tensor t_final, Tensor v_image, Tensor v_alpha, bool absgrad) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tinysplat_cpu, CPU, m) {
  m.impl("rasterize_forward", &rasterize_forward);
  m.impl("rasterize_backward", &rasterize_backward);
  m.impl("plan_tiles", &plan_tiles);
}
