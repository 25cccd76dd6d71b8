// A photo's bilateral grid applied to a rendered image, as Nerfstudio's lib_bilagrid `slice` does it: at
// each pixel a 3x4 colour map is read from the grid [L, H, W] at the pixel's (x, y) across the image and
// its grey level (BT.601) across the grid's L levels, trilinearly, corners aligned, clamped at the border
// (F.grid_sample's bilinear mode, align_corners, padding "border"), then applied to the pixel's colour.
// The gradient goes to the grid and to the colour (through the map and through the grey level), as
// autograd's through grid_sample. The grid is taken as [L, H, W, 12]: a cell's map in one cache line.
// Through PyTorch, grid_sample's 3D backward on a CPU made the grid most of a small scene's step.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int MAP = 12;  // a 3x4 affine colour map, row-major
constexpr float GREY[3] = {0.299f, 0.587f, 0.114f};

struct Grid {
  int64_t L, H, W;
};

Grid grid_of(const at::Tensor& grid, const at::Tensor& rgb) {
  for (const auto* t : {&grid, &rgb}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "the bilateral grid and the image must be contiguous float32 CPU tensors");
  }
  TORCH_CHECK(grid.dim() == 4 && grid.size(3) == MAP, "the bilateral grid must be [L, H, W, 12]");
  TORCH_CHECK(rgb.dim() == 3 && rgb.size(2) == 3, "the image must be [height, width, 3]");
  return {grid.size(0), grid.size(1), grid.size(2)};
}

// One axis of the trilinear read: the lower cell, the weight of the upper one, and whether the
// coordinate moves the read (grid_sample's border clamp stops its gradient at and past either end).
struct Axis {
  int64_t lower, step;  // step: 1, or 0 on an axis of one cell
  float frac;
  bool inside;
};

inline Axis axis_at(float coordinate, int64_t size) {
  const float last = static_cast<float>(size - 1);
  const bool inside = coordinate > 0.0f && coordinate < last;
  const float c = std::min(std::max(coordinate, 0.0f), last);
  // the cell below, but never the last one: at the last cell's coordinate the upper weight is 1
  const int64_t lower = std::min<int64_t>(static_cast<int64_t>(c), std::max<int64_t>(size - 2, 0));
  return {lower, size > 1 ? 1 : 0, c - static_cast<float>(lower), inside};
}

// The 8 cells around a pixel's read, their weights, and the weights' derivatives in the grey axis.
struct Cells {
  const float* map[8];
  int64_t offset[8];
  float weight[8], d_weight_dz[8];
  bool z_inside;
};

inline Cells cells_at(const Grid& g, const float* grid, int64_t row, int64_t col, int64_t height, int64_t width,
                      const float* rgb) {
  // the pixel's position across the image in [0, 1] (torch.linspace(0, 1, n)), then in cells
  const float x = width > 1 ? static_cast<float>(col) / static_cast<float>(width - 1) : 0.0f;
  const float y = height > 1 ? static_cast<float>(row) / static_cast<float>(height - 1) : 0.0f;
  const float grey = GREY[0] * rgb[0] + GREY[1] * rgb[1] + GREY[2] * rgb[2];
  const Axis ax = axis_at(x * static_cast<float>(g.W - 1), g.W);
  const Axis ay = axis_at(y * static_cast<float>(g.H - 1), g.H);
  const Axis az = axis_at(grey * static_cast<float>(g.L - 1), g.L);
  Cells c;
  c.z_inside = az.inside;
  for (int k = 0; k < 8; ++k) {
    const int dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
    const float wx = dx ? ax.frac : 1.0f - ax.frac, wy = dy ? ay.frac : 1.0f - ay.frac;
    const float wz = dz ? az.frac : 1.0f - az.frac;
    c.offset[k] = (((az.lower + dz * az.step) * g.H + ay.lower + dy * ay.step) * g.W + ax.lower + dx * ax.step) * MAP;
    c.map[k] = grid + c.offset[k];
    c.weight[k] = wx * wy * wz;
    c.d_weight_dz[k] = (dz ? 1.0f : -1.0f) * wx * wy;
  }
  return c;
}

inline void read_map(const Cells& c, float* map) {
  for (int q = 0; q < MAP; ++q) map[q] = 0.0f;
  for (int k = 0; k < 8; ++k)
    for (int q = 0; q < MAP; ++q) map[q] += c.weight[k] * c.map[k][q];
}

at::Tensor bilateral_grid_forward(const at::Tensor& grid, const at::Tensor& rgb) {
  const Grid g = grid_of(grid, rgb);
  const int64_t height = rgb.size(0), width = rgb.size(1);
  at::Tensor out = at::empty_like(rgb);
  const float* gp = grid.data_ptr<float>();
  const float* in = rgb.data_ptr<float>();
  float* o = out.data_ptr<float>();
  tinysplat::parallel_for(0, height, 8, [&](int64_t begin, int64_t end) {
    float map[MAP];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t col = 0; col < width; ++col) {
        const float* px = in + (r * width + col) * 3;
        read_map(cells_at(g, gp, r, col, height, width, px), map);
        float* po = o + (r * width + col) * 3;
        for (int k = 0; k < 3; ++k)
          po[k] = map[4 * k] * px[0] + map[4 * k + 1] * px[1] + map[4 * k + 2] * px[2] + map[4 * k + 3];
      }
    }
  });
  return out;
}

// (the image's gradient [height, width, 3], the grid's [L, H, W, 12])
std::tuple<at::Tensor, at::Tensor> bilateral_grid_backward(const at::Tensor& grid, const at::Tensor& rgb,
                                                           const at::Tensor& v_out) {
  const Grid g = grid_of(grid, rgb);
  TORCH_CHECK(v_out.sizes() == rgb.sizes() && v_out.scalar_type() == at::kFloat && v_out.is_contiguous(),
              "the output's gradient must be a contiguous float32 tensor of the image's size");
  const int64_t height = rgb.size(0), width = rgb.size(1), cells = grid.numel();
  at::Tensor v_rgb = at::empty_like(rgb);
  const float* gp = grid.data_ptr<float>();
  const float* in = rgb.data_ptr<float>();
  const float* vo = v_out.data_ptr<float>();
  float* vr = v_rgb.data_ptr<float>();
  // each worker's grid gradient by itself, summed in worker order: the same result for a thread count
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(height, 1));
  std::vector<float> v_grids(workers * cells, 0.0f);
  tinysplat::for_each_piece(height, workers, [&](int64_t w, int64_t first_row, int64_t end_row) {
    float* __restrict v_grid = v_grids.data() + w * cells;
    for (int64_t r = first_row; r < end_row; ++r) {
      for (int64_t col = 0; col < width; ++col) {
        const int64_t p = (r * width + col) * 3;
        const float* px = in + p;
        const Cells c = cells_at(g, gp, r, col, height, width, px);
        float map[MAP], v_map[MAP];
        read_map(c, map);
        for (int k = 0; k < 3; ++k) {
          for (int m = 0; m < 3; ++m) v_map[4 * k + m] = vo[p + k] * px[m];
          v_map[4 * k + 3] = vo[p + k];
        }
        for (int m = 0; m < 3; ++m) vr[p + m] = vo[p] * map[m] + vo[p + 1] * map[4 + m] + vo[p + 2] * map[8 + m];
        float v_z = 0.0f;  // the loss's derivative in the grey level's cell coordinate
        for (int k = 0; k < 8; ++k) {
          float along = 0.0f;
          for (int q = 0; q < MAP; ++q) {
            v_grid[c.offset[k] + q] += c.weight[k] * v_map[q];
            along += c.map[k][q] * v_map[q];
          }
          v_z += c.d_weight_dz[k] * along;
        }
        if (c.z_inside) {
          const float v_grey = v_z * static_cast<float>(g.L - 1);
          for (int m = 0; m < 3; ++m) vr[p + m] += v_grey * GREY[m];
        }
      }
    }
  });
  at::Tensor v_grid = at::zeros_like(grid);
  float* vg = v_grid.data_ptr<float>();
  for (int64_t w = 0; w < workers; ++w)
    for (int64_t i = 0; i < cells; ++i) vg[i] += v_grids[w * cells + i];
  return {v_rgb, v_grid};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinysplat_cpu, m) {
  m.def("bilateral_grid_forward(Tensor grid, Tensor rgb) -> Tensor");
  m.def("bilateral_grid_backward(Tensor grid, Tensor rgb, Tensor v_out) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tinysplat_cpu, CPU, m) {
  m.impl("bilateral_grid_forward", &bilateral_grid_forward);
  m.impl("bilateral_grid_backward", &bilateral_grid_backward);
}
