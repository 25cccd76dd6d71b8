// SSIM of two images as pytorch-msssim computes it (its window separable, at the positions where it
// fits in the image; K1 = 0.01, K2 = 0.03, data range 1), averaged over channels and positions, and its
// gradient with respect to the first image; built into the same library as rasterize.cpp. Through
// PyTorch's convolutions (ten depthwise ones forward, six backward, on 11-tap windows) DSSIM costs a
// quarter of a CPU training step at 800x800. A training step takes the value and the gradient in one
// call (ssim_and_gradient), which computes the five windowed means once for both.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "parallel.h"

#include <algorithm>
#include <cstdint>
#include <memory>
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

// out[i] += scale in[i], for i < n (restrict: the compiler vectorises it without checks for overlap)
inline void add_scaled(float* __restrict out, const float* __restrict in, float scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += scale * in[i];
}

// out[i] = sum over k of w[k] value(a[i + k], b[i + k]), for i < n
template <typename Value>
inline void window_along(const float* __restrict a, const float* __restrict b, const float* __restrict w, int64_t S,
                         int64_t n, float* __restrict out, Value value) {
  for (int64_t i = 0; i < n; ++i) out[i] = 0.0f;
  for (int64_t k = 0; k < S; ++k) {
    const float wk = w[k];
    for (int64_t i = 0; i < n; ++i) out[i] += wk * value(a[i + k], b[i + k]);
  }
}

// The five windowed means of one channel, maps [MAPS, HO, WO]: the window along each row first (rows
// [MAPS, H, WO]), then down each column.
void windowed_means(const Planes& p, const float* x, const float* y, const float* w, float* rows, float* maps) {
  const int64_t H = p.H, W = p.W, S = p.S, HO = p.HO, WO = p.WO;
  tinysplat::parallel_for(0, H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * W, *yr = y + r * W;
      const auto out = [&](int m) { return rows + (m * H + r) * WO; };
      window_along(xr, yr, w, S, WO, out(0), [](float a, float) { return a; });
      window_along(xr, yr, w, S, WO, out(1), [](float, float b) { return b; });
      window_along(xr, yr, w, S, WO, out(2), [](float a, float) { return a * a; });
      window_along(xr, yr, w, S, WO, out(3), [](float, float b) { return b * b; });
      window_along(xr, yr, w, S, WO, out(4), [](float a, float b) { return a * b; });
    }
  });
  tinysplat::parallel_for(0, HO, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int m = 0; m < MAPS; ++m) {
        float* out = maps + (m * HO + r) * WO;
        std::fill(out, out + WO, 0.0f);
        for (int64_t k = 0; k < S; ++k) add_scaled(out, rows + (m * H + r + k) * WO, w[k], WO);
      }
    }
  });
}

// The SSIM terms at one position from its windowed means: luminance l = A / B, contrast-structure
// cs = Cn / D.
struct Terms {
  float mu1, mu2, B, D, l, cs;

  Terms(const float* maps, int64_t plane, int64_t i) {
    mu1 = maps[i], mu2 = maps[plane + i];
    const float s11 = maps[2 * plane + i] - mu1 * mu1, s22 = maps[3 * plane + i] - mu2 * mu2;
    const float s12 = maps[4 * plane + i] - mu1 * mu2;
    B = mu1 * mu1 + mu2 * mu2 + C1;
    D = s11 + s22 + C2;
    l = (2.0f * mu1 * mu2 + C1) / B;
    cs = (2.0f * s12 + C2) / D;
  }
};

// Row r of positions: each one's SSIM (l cs) into values, summed in float64 in a fixed order (the same
// value for any thread count) and returned; with d, also the derivatives of the mean SSIM by the windowed
// means of x, x^2 and x y there, d [3, plane], each term over the C channels' positions (`scale`).
double row_of_terms(const float* maps, int64_t plane, int64_t WO, int64_t r, float* __restrict values,
                    float* __restrict d, float scale) {
  for (int64_t i = 0; i < WO; ++i) {  // a row's values first: this loop vectorises, the sum does not
    const int64_t at = r * WO + i;
    const Terms t(maps, plane, at);
    values[i] = t.l * t.cs;
    if (d) {
      const float dl = 2.0f * (t.mu2 - t.mu1 * t.l) / t.B, dcs = 2.0f * (t.mu1 * t.cs - t.mu2) / t.D;
      d[at] = scale * (dl * t.cs + t.l * dcs);
      d[plane + at] = -scale * t.l * t.cs / t.D;
      d[2 * plane + at] = 2.0f * scale * t.l / t.D;
    }
  }
  double sum = 0.0;
  for (int64_t i = 0; i < WO; ++i) sum += values[i];
  return sum;
}

// The mean SSIM and, with v_x ([C, H, W]), its gradient d(mean SSIM)/dx from the same windowed means
// (a training step needs both, and the means are most of the work): each position's derivatives with
// respect to the windowed means of x, x^2 and x y, carried back through the window (its transpose: down
// the columns, then along the rows) to the pixels.
double mean_ssim(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window, at::Tensor* v_x) {
  const Planes p = planes_of(x, y, window);
  const int64_t H = p.H, W = p.W, S = p.S, HO = p.HO, WO = p.WO, plane = HO * WO;
  const float scale = static_cast<float>(1.0 / static_cast<double>(p.C * plane));
  const float* w = window.data_ptr<float>();
  // scratch written whole before it is read: not zero-filled
  const auto rows = std::make_unique_for_overwrite<float[]>(MAPS * H * WO);
  const auto maps = std::make_unique_for_overwrite<float[]>(MAPS * plane);
  const auto d = v_x ? std::make_unique_for_overwrite<float[]>(3 * plane) : nullptr;
  const auto back = v_x ? std::make_unique_for_overwrite<float[]>(3 * H * WO) : nullptr;
  std::vector<double> row_sums(p.C * HO);
  for (int64_t c = 0; c < p.C; ++c) {
    const float *xc = x.data_ptr<float>() + c * H * W, *yc = y.data_ptr<float>() + c * H * W;
    windowed_means(p, xc, yc, w, rows.get(), maps.get());
    tinysplat::parallel_for(0, HO, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> values(WO);
      for (int64_t r = begin; r < end; ++r)
        row_sums[c * HO + r] = row_of_terms(maps.get(), plane, WO, r, values.data(), d.get(), scale);
    });
    if (!v_x) continue;
    // down the columns: back[m][r] = sum over k of w[k] d[m][r - k]
    tinysplat::parallel_for(0, H, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int m = 0; m < 3; ++m) {
          float* out = back.get() + (m * H + r) * WO;
          std::fill(out, out + WO, 0.0f);
          for (int64_t k = 0; k < S; ++k) {
            if (r - k >= 0 && r - k < HO) add_scaled(out, d.get() + m * plane + (r - k) * WO, w[k], WO);
          }
        }
      }
    });
    // along the rows, and the chain rule through x^2 and x y
    float* vc = v_x->data_ptr<float>() + c * H * W;
    tinysplat::parallel_for(0, H, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> spread(3 * W);
      for (int64_t r = begin; r < end; ++r) {
        std::fill(spread.begin(), spread.end(), 0.0f);
        for (int m = 0; m < 3; ++m) {
          const float* in = back.get() + (m * H + r) * WO;
          float* out = spread.data() + m * W;
          for (int64_t k = 0; k < S; ++k) add_scaled(out + k, in, w[k], WO);
        }
        for (int64_t i = 0; i < W; ++i) {
          vc[r * W + i] = spread[i] + 2.0f * xc[r * W + i] * spread[W + i] + yc[r * W + i] * spread[2 * W + i];
        }
      }
    });
  }
  double total = 0.0;
  for (const double s : row_sums) total += s;
  return total / static_cast<double>(p.C * plane);
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
