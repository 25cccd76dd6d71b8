// SSIM of two images as pytorch-msssim computes it (its window separable, at the positions where it
// fits in the image; K1 = 0.01, K2 = 0.03, data range 1), averaged over channels and positions, and its
// gradient with respect to the first image; built into the same library as rasterize.cpp. Through
// PyTorch's convolutions (ten depthwise ones forward, six backward, on 11-tap windows) DSSIM costs a
// quarter of a CPU training step at 800x800. A training step takes the value and the gradient in one
// call (ssim_and_gradient), which computes the five windowed means once for both.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "lanes.h"
#include "parallel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

constexpr float C1 = 0.01f * 0.01f, C2 = 0.03f * 0.03f;
constexpr int MAPS = 5;  // the windowed means of x, y, x^2, y^2 and x y

struct Planes {
  int64_t C, H, W, S, HO, WO;  // channels, height, width, window size; the window's positions
};

Planes planes_of(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window) {
  for (const auto* t : {&x, &y, &window}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "SSIM's images and window must be contiguous float32 CPU tensors");
  }
  TORCH_CHECK(x.dim() == 3 && x.sizes() == y.sizes(), "SSIM's images must be two [C, H, W] tensors of one size");
  const int64_t S = window.numel();
  TORCH_CHECK(S >= 1 && x.size(1) >= S && x.size(2) >= S, "SSIM's window must fit in the images");
  return {x.size(0), x.size(1), x.size(2), S, x.size(1) - S + 1, x.size(2) - S + 1};
}

// The SSIM terms at one position from its windowed means (means [MAPS, plane]): luminance l = A / B,
// contrast-structure cs = Cn / D.
struct Terms {
  float mu1, mu2, B, D, l, cs;

  Terms(const float* means, int64_t plane, int64_t i) {
    mu1 = means[i], mu2 = means[plane + i];
    const float s11 = means[2 * plane + i] - mu1 * mu1, s22 = means[3 * plane + i] - mu2 * mu2;
    const float s12 = means[4 * plane + i] - mu1 * mu2;
    B = mu1 * mu1 + mu2 * mu2 + C1;
    D = s11 + s22 + C2;
    l = (2.0f * mu1 * mu2 + C1) / B;
    cs = (2.0f * s12 + C2) / D;
  }
};

template <typename V>
inline V load_as(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
inline void store_as(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// fn(zero, i) for i = 0, LANES, 2 LANES, ... with zero a vector (its LANES positions from i), then
// one position at a time with zero a float: a loop body written once for both
template <typename Fn>
inline void in_lanes(int64_t n, Fn fn) {
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES) fn(vf{}, i);
  for (; i < n; ++i) fn(0.0f, i);
}

// out[i] = sum over k < S of w[k] in[i + k], for i < n, each sum in a register
inline void window_along(const float* in, const float* w, int64_t S, int64_t n, float* out) {
  in_lanes(n, [&](auto zero, int64_t i) {
    using V = decltype(zero);
    V sum = zero;
    for (int64_t k = 0; k < S; ++k) sum += w[k] * load_as<V>(in + i + k);
    store_as(out + i, sum);
  });
}

// A worker's band of rows of one channel, one row at a time: each row's windowed means, SSIM terms and
// gradient made and used while they are in cache, each sum kept in a register over the window's taps;
// the window down the columns first (the five products of x and y at the row's S input rows, summed
// into one row of each), then along that row. Whole planes of them, each sum added into memory tap by
// tap, took 56 ms for the value and gradient at 800x800, against 25 now.
struct Band {
  const Planes& p;
  const float *x, *y, *w;  // one channel's planes and the window
  float scale;  // 1 / (C HO WO): each position's share of the mean
  std::vector<float> columns, means, values, ring, back, spread, reversed;

  Band(const Planes& planes, const float* x_, const float* y_, const float* w_, float scale_, bool gradient)
      : p(planes), x(x_), y(y_), w(w_), scale(scale_), columns(MAPS * planes.W), means(MAPS * planes.WO),
        values(planes.WO) {
    if (!gradient) return;
    ring.resize(3 * p.S * p.WO);
    back.assign(3 * padded(), 0.0f);  // its S - 1 zeros at each end stay zero
    spread.resize(3 * p.W);
    reversed.assign(w, w + p.S);
    std::reverse(reversed.begin(), reversed.end());
  }

  int64_t padded() const { return p.WO + 2 * (p.S - 1); }

  // the five windowed means at output row r, into means [MAPS, WO]
  void means_of_row(int64_t r) {
    const int64_t W = p.W, WO = p.WO, S = p.S;
    in_lanes(W, [&](auto zero, int64_t j) {
      using V = decltype(zero);
      V s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero;
      for (int64_t k = 0; k < S; ++k) {
        const V a = load_as<V>(x + (r + k) * W + j), b = load_as<V>(y + (r + k) * W + j);
        const V wa = w[k] * a, wb = w[k] * b;
        s0 += wa, s1 += wb, s2 += wa * a, s3 += wb * b, s4 += wa * b;
      }
      float* c = columns.data() + j;
      store_as(c, s0), store_as(c + W, s1), store_as(c + 2 * W, s2), store_as(c + 3 * W, s3), store_as(c + 4 * W, s4);
    });
    for (int m = 0; m < MAPS; ++m) window_along(columns.data() + m * W, w, S, WO, means.data() + m * WO);
  }

  // output row r's SSIM summed in float64 in a fixed order (the same for any thread count); with the
  // gradient, also the derivatives of the mean SSIM by the windowed means of x, x^2 and x y there, into
  // the ring's slot for row r
  double row_of_terms(int64_t r, bool gradient) {
    const int64_t WO = p.WO;
    means_of_row(r);
    float* d = gradient ? ring.data() + 3 * (r % p.S) * WO : nullptr;
    for (int64_t i = 0; i < WO; ++i) {  // a row's values first: this loop vectorises, the sum does not
      const Terms t(means.data(), WO, i);
      values[i] = t.l * t.cs;
      if (d) {
        const float dl = 2.0f * (t.mu2 - t.mu1 * t.l) / t.B, dcs = 2.0f * (t.mu1 * t.cs - t.mu2) / t.D;
        d[i] = scale * (dl * t.cs + t.l * dcs);
        d[WO + i] = -scale * t.l * t.cs / t.D;
        d[2 * WO + i] = 2.0f * scale * t.l / t.D;
      }
    }
    double sum = 0.0;
    for (int64_t i = 0; i < WO; ++i) sum += values[i];
    return sum;
  }

  // input row r's gradient, from the derivatives of output rows r - S + 1 .. r in the ring: the window's
  // transpose down the columns, then along the row (the window reversed over the row padded with
  // zeros), and the chain rule through x^2 and x y
  void gradient_of_row(int64_t r, float* v_x) {
    const int64_t W = p.W, WO = p.WO, S = p.S, P = padded();
    const int64_t first = std::max<int64_t>(r - p.HO + 1, 0), last = std::min(S - 1, r);
    in_lanes(WO, [&](auto zero, int64_t i) {
      using V = decltype(zero);
      V s0 = zero, s1 = zero, s2 = zero;
      for (int64_t k = first; k <= last; ++k) {
        const float* d = ring.data() + 3 * ((r - k) % S) * WO + i;
        s0 += w[k] * load_as<V>(d), s1 += w[k] * load_as<V>(d + WO), s2 += w[k] * load_as<V>(d + 2 * WO);
      }
      float* b = back.data() + (S - 1) + i;
      store_as(b, s0), store_as(b + P, s1), store_as(b + 2 * P, s2);
    });
    for (int m = 0; m < 3; ++m) window_along(back.data() + m * P, reversed.data(), S, W, spread.data() + m * W);
    const float *xr = x + r * W, *yr = y + r * W;
    for (int64_t i = 0; i < W; ++i) v_x[r * W + i] = spread[i] + 2.0f * xr[i] * spread[W + i] + yr[i] * spread[2 * W + i];
  }
};

// The mean SSIM and, with v_x ([C, H, W]), its gradient d(mean SSIM)/dx from the same windowed means
// (a training step needs both, and the means are most of the work). Each worker takes a band of rows:
// of output rows for the value alone; of input rows for the gradient, whose first rows need the
// derivatives of the S - 1 output rows above the band too, made again there (not counted twice).
double mean_ssim(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window, at::Tensor* v_x) {
  const Planes p = planes_of(x, y, window);
  const int64_t H = p.H, W = p.W, S = p.S, HO = p.HO, WO = p.WO;
  const float scale = static_cast<float>(1.0 / static_cast<double>(p.C * HO * WO));
  const float* w = window.data_ptr<float>();
  std::vector<double> row_sums(p.C * HO);
  const bool gradient = v_x != nullptr;
  tinysplat::parallel_for(0, gradient ? H : HO, 2 * S, [&](int64_t begin, int64_t end) {
    for (int64_t c = 0; c < p.C; ++c) {
      const float *xc = x.data_ptr<float>() + c * H * W, *yc = y.data_ptr<float>() + c * H * W;
      Band band(p, xc, yc, w, scale, gradient);
      if (!gradient) {
        for (int64_t r = begin; r < end; ++r) row_sums[c * HO + r] = band.row_of_terms(r, false);
        continue;
      }
      for (int64_t r = std::max<int64_t>(begin - S + 1, 0); r < std::min(begin, HO); ++r) band.row_of_terms(r, true);
      for (int64_t r = begin; r < end; ++r) {
        if (r < HO) row_sums[c * HO + r] = band.row_of_terms(r, true);
        band.gradient_of_row(r, v_x->data_ptr<float>() + c * H * W);
      }
    }
  });
  double total = 0.0;
  for (const double s : row_sums) total += s;
  return total / static_cast<double>(p.C * HO * WO);
}

double ssim_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window) {
  return mean_ssim(x, y, window, nullptr);
}

std::tuple<double, at::Tensor> ssim_and_gradient(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window) {
  at::Tensor v_x = at::empty(x.sizes(), x.options());
  const double value = mean_ssim(x, y, window, &v_x);
  return {value, v_x};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinysplat_cpu, m) {
  m.def("ssim_forward(Tensor x, Tensor y, Tensor window) -> float");
  m.def("ssim_and_gradient(Tensor x, Tensor y, Tensor window) -> (float, Tensor)");
}

TORCH_LIBRARY_IMPL(tinysplat_cpu, CPU, m) {
  m.impl("ssim_forward", &ssim_forward);
  m.impl("ssim_and_gradient", &ssim_and_gradient);
}
