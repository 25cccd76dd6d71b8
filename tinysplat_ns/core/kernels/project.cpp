// The per-Gaussian half of TinySplat's compiled CPU path, built into the same library as
// rasterize.cpp: the EWA projection of projection.py and the SH colours of sh.py, forward and
// hand-derived backward over ATen's threads: the projection and the SH colours LANES Gaussians at a
// time, one to a vector lane (lanes.h), the SH gradients one Gaussian at a time. In PyTorch these
// were a few dozen elementwise kernels over [C, N] tensors each way, and at 200k Gaussians they cost
// more than the compositing itself (docs/benchmarks.md).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "lanes.h"
#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

namespace {

constexpr int64_t GRAIN = 1024;  // Gaussians per parallel chunk

void check_f32(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), what,
              " must be contiguous float32 CPU tensors");
}

const float* optional_ptr(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined() || t->numel() == 0) return nullptr;
  check_f32(*t, "gradients");
  return t->data_ptr<float>();
}

// One camera: world-to-camera rotation and translation, intrinsics, and the Jacobian's clamp.
struct Camera {
  float R[3][3], t[3], fx, fy, cx, cy, lo_x, hi_x, lo_y, hi_y;

  Camera(const float* viewmat, const float* K, int64_t width, int64_t height) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) R[i][j] = viewmat[4 * i + j];
      t[i] = viewmat[4 * i + 3];
    }
    fx = K[0], fy = K[4], cx = K[2], cy = K[5];
    const float lim_x = 0.3f * 0.5f * width / fx, lim_y = 0.3f * 0.5f * height / fy;
    lo_x = -(cx / fx + lim_x), hi_x = (width - cx) / fx + lim_x;
    lo_y = -(cy / fy + lim_y), hi_y = (height - cy) / fy + lim_y;
  }
};

// Rotation matrix of the normalised quaternion (w, x, y, z), and that unit quaternion.
void rotation(const vf quat[4], vf R[3][3], vf q[4], vf& norm) {
  norm = lane_max(lane_sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]),
                  splat(1e-12f));
  for (int i = 0; i < 4; ++i) q[i] = quat[i] / norm;
  const vf w = q[0], x = q[1], y = q[2], z = q[3];
  R[0][0] = 1.0f - 2.0f * (y * y + z * z), R[0][1] = 2.0f * (x * y - w * z), R[0][2] = 2.0f * (x * z + w * y);
  R[1][0] = 2.0f * (x * y + w * z), R[1][1] = 1.0f - 2.0f * (x * x + z * z), R[1][2] = 2.0f * (y * z - w * x);
  R[2][0] = 2.0f * (x * z - w * y), R[2][1] = 2.0f * (y * z + w * x), R[2][2] = 1.0f - 2.0f * (x * x + y * y);
}

// Everything the projection of LANES Gaussians into one camera computes, kept for the backward pass.
struct Projected {
  vf p[3];  // camera-space mean
  vf z;  // p[2], or 1 when outside the depth range (a safe value: culled Gaussians stay finite)
  vi in_depth, clamped_x, clamped_y;
  vf tx, ty;
  vf T[2][3];  // J R_w2c
  vf M[3][3];  // R(q) S
  vf Rq[3][3], q[4], qnorm;
  vf H[2][3];  // T M: cov2d = H H^T
  vf cxx, cxy, cyy;  // before the low-pass eps2d
  vf det_orig, det;
  vi valid;
};

// Gaussians first..first + count - 1 (count <= LANES), one to a lane: the rows of means [N, 3], quats
// [N, 4] and scales [N, 3], each column a vector.
struct GaussianLanes {
  vf mean[3], quat[4], scale[3];

  GaussianLanes(const float* means, const float* quats, const float* scales, int64_t first, int count) {
    load_columns(means + 3 * first, count, mean);
    load_columns(quats + 4 * first, count, quat);
    load_columns(scales + 3 * first, count, scale);
  }
};

// The EWA projection of LANES Gaussians side by side: all lanes compute, masks say which results hold.
Projected project_lanes(const Camera& cam, const GaussianLanes& g, float eps2d, float near_plane, float far_plane) {
  Projected s;
  for (int i = 0; i < 3; ++i) {
    s.p[i] = cam.R[i][0] * g.mean[0] + cam.R[i][1] * g.mean[1] + cam.R[i][2] * g.mean[2] + cam.t[i];
  }
  s.in_depth = (s.p[2] > near_plane) & (s.p[2] < far_plane);
  s.z = s.in_depth ? s.p[2] : splat(1.0f);
  const vf z = s.z, rx = s.p[0] / z, ry = s.p[1] / z;
  s.clamped_x = ~((rx >= cam.lo_x) & (rx <= cam.hi_x));
  s.clamped_y = ~((ry >= cam.lo_y) & (ry <= cam.hi_y));
  s.tx = z * lane_min(lane_max(rx, splat(cam.lo_x)), splat(cam.hi_x));
  s.ty = z * lane_min(lane_max(ry, splat(cam.lo_y)), splat(cam.hi_y));
  const vf J[2][3] = {{cam.fx / z, vf{}, -cam.fx * s.tx / (z * z)}, {vf{}, cam.fy / z, -cam.fy * s.ty / (z * z)}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) s.T[i][j] = J[i][0] * cam.R[0][j] + J[i][1] * cam.R[1][j] + J[i][2] * cam.R[2][j];
  }
  rotation(g.quat, s.Rq, s.q, s.qnorm);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) s.M[i][j] = s.Rq[i][j] * g.scale[j];
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) s.H[i][j] = s.T[i][0] * s.M[0][j] + s.T[i][1] * s.M[1][j] + s.T[i][2] * s.M[2][j];
  }
  const auto dot = [](const vf* a, const vf* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; };
  s.cxx = dot(s.H[0], s.H[0]), s.cxy = dot(s.H[0], s.H[1]), s.cyy = dot(s.H[1], s.H[1]);
  s.det_orig = s.cxx * s.cyy - s.cxy * s.cxy;
  s.det = (s.cxx + eps2d) * (s.cyy + eps2d) - s.cxy * s.cxy;
  s.valid = s.in_depth & (s.det > 0.0f);
  return s;
}

struct Cameras {
  const float* viewmats;
  const float* Ks;
  int64_t C;
};

Cameras make_cameras(const at::Tensor& viewmats, const at::Tensor& Ks) {
  check_f32(viewmats, "viewmats");
  check_f32(Ks, "Ks");
  TORCH_CHECK(viewmats.dim() == 3 && viewmats.size(1) == 4 && viewmats.size(2) == 4, "viewmats must be [C, 4, 4]");
  TORCH_CHECK(Ks.dim() == 3 && Ks.size(0) == viewmats.size(0) && Ks.size(1) == 3 && Ks.size(2) == 3, "Ks must be [C, 3, 3]");
  return {viewmats.data_ptr<float>(), Ks.data_ptr<float>(), viewmats.size(0)};
}

void check_gaussians(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales) {
  check_f32(means, "means");
  check_f32(quats, "quats");
  check_f32(scales, "scales");
  const int64_t N = means.size(0);
  TORCH_CHECK(means.sizes() == at::IntArrayRef({N, 3}) && quats.sizes() == at::IntArrayRef({N, 4}) &&
                  scales.sizes() == at::IntArrayRef({N, 3}),
              "means, quats and scales must be [N, 3], [N, 4], [N, 3]");
}

// means2d [C, N, 2], conics [C, N, 3], depths [C, N], radii [C, N] int32, compensations [C, N] (or empty)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, double eps2d, double near_plane, double far_plane,
    bool with_compensation) {
  check_gaussians(means, quats, scales);
  const Cameras cams = make_cameras(viewmats, Ks);
  const int64_t N = means.size(0), C = cams.C;
  auto f32 = means.options();
  at::Tensor means2d = at::empty({C, N, 2}, f32), conics = at::empty({C, N, 3}, f32), depths = at::empty({C, N}, f32);
  at::Tensor radii = at::empty({C, N}, f32.dtype(at::kInt));
  at::Tensor comps = with_compensation ? at::empty({C, N}, f32) : at::empty({0}, f32);
  const float *m = means.data_ptr<float>(), *q = quats.data_ptr<float>(), *sc = scales.data_ptr<float>();
  float *out2d = means2d.data_ptr<float>(), *out_conic = conics.data_ptr<float>(), *out_depth = depths.data_ptr<float>();
  float* out_comp = with_compensation ? comps.data_ptr<float>() : nullptr;
  int32_t* out_radii = radii.data_ptr<int32_t>();
  const float eps = static_cast<float>(eps2d);
  for (int64_t c = 0; c < C; ++c) {
    const Camera cam(cams.viewmats + 16 * c, cams.Ks + 9 * c, width, height);
    tinysplat::parallel_for(0, N, GRAIN, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; n += LANES) {
        const int count = static_cast<int>(std::min<int64_t>(LANES, end - n));
        const Projected s = project_lanes(cam, GaussianLanes(m, q, sc, n, count), eps, near_plane, far_plane);
        const int64_t i = c * N + n;
        const vf det_safe = s.valid ? s.det : splat(1.0f), cxx = s.cxx + eps, cyy = s.cyy + eps;
        store_columns(out_conic + 3 * i, count, {cyy / det_safe, -s.cxy / det_safe, cxx / det_safe});
        if (out_comp) store_rows(out_comp + i, 1, count, lane_sqrt(lane_max(s.det_orig / det_safe, vf{})));
        const vf u = cam.fx * s.p[0] / s.z + cam.cx, v = cam.fy * s.p[1] / s.z + cam.cy;
        store_columns(out2d + 2 * i, count, {u, v});
        store_rows(out_depth + i, 1, count, s.p[2]);
        const vf mid = 0.5f * (cxx + cyy);
        const vf radius = lane_ceil(3.0f * lane_sqrt(mid + lane_sqrt(lane_max(mid * mid - s.det, splat(0.01f)))));
        const float w = static_cast<float>(width), h = static_cast<float>(height);
        const vi on_image = (u + radius > 0.0f) & (u - radius < w) & (v + radius > 0.0f) & (v - radius < h);
        store_rows(out_radii + i, 1, count, s.valid & on_image ? __builtin_convertvector(radius, vi) : vi{});
      }
    });
  }
  return {means2d, conics, depths, radii, comps};
}

// d(loss)/d(quaternion) from d(loss)/dR(q) of the unit quaternion q = quat / norm, added to v_quat.
void quaternion_backward(const vf q[4], vf norm, const vf v_R[3][3], vf v_quat[4]) {
  const vf w = q[0], x = q[1], y = q[2], z = q[3];
  vf g[4];
  g[0] = 2.0f * (-z * v_R[0][1] + y * v_R[0][2] + z * v_R[1][0] - x * v_R[1][2] - y * v_R[2][0] + x * v_R[2][1]);
  g[1] = 2.0f * (y * v_R[0][1] + z * v_R[0][2] + y * v_R[1][0] - 2.0f * x * v_R[1][1] - w * v_R[1][2] +
                 z * v_R[2][0] + w * v_R[2][1] - 2.0f * x * v_R[2][2]);
  g[2] = 2.0f * (-2.0f * y * v_R[0][0] + x * v_R[0][1] + w * v_R[0][2] + x * v_R[1][0] + z * v_R[1][2] -
                 w * v_R[2][0] + z * v_R[2][1] - 2.0f * y * v_R[2][2]);
  g[3] = 2.0f * (-2.0f * z * v_R[0][0] - w * v_R[0][1] + x * v_R[0][2] + w * v_R[1][0] - 2.0f * z * v_R[1][1] +
                 y * v_R[1][2] + x * v_R[2][0] + y * v_R[2][1]);
  const vf along = q[0] * g[0] + q[1] * g[1] + q[2] * g[2] + q[3] * g[3];
  for (int i = 0; i < 4; ++i) v_quat[i] += (g[i] - q[i] * along) / norm;
}

// Gradients of means [N, 3], quats [N, 4], scales [N, 3] from those of the projection's outputs
// (each optional: an output nobody used). A culled Gaussian (radius 0) receives nothing from the
// rasterizer, so of it only the depth's gradient is followed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> project_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, double eps2d, double near_plane, double far_plane,
    const at::Tensor& radii, const std::optional<at::Tensor>& v_means2d, const std::optional<at::Tensor>& v_conics,
    const std::optional<at::Tensor>& v_depths, const std::optional<at::Tensor>& v_comps) {
  check_gaussians(means, quats, scales);
  const Cameras cams = make_cameras(viewmats, Ks);
  const int64_t N = means.size(0), C = cams.C;
  TORCH_CHECK(radii.scalar_type() == at::kInt && radii.is_contiguous() && radii.numel() == C * N, "radii must be [C, N] int32");
  at::Tensor v_means = at::empty({N, 3}, means.options()), v_quats = at::empty({N, 4}, means.options()),
             v_scales = at::empty({N, 3}, means.options());
  const float *m = means.data_ptr<float>(), *qt = quats.data_ptr<float>(), *sc = scales.data_ptr<float>();
  const float *g2d = optional_ptr(v_means2d), *gconic = optional_ptr(v_conics), *gdepth = optional_ptr(v_depths),
              *gcomp = optional_ptr(v_comps);
  const int32_t* rad = radii.data_ptr<int32_t>();
  float *vm = v_means.data_ptr<float>(), *vq = v_quats.data_ptr<float>(), *vs = v_scales.data_ptr<float>();
  const float eps = static_cast<float>(eps2d);
  tinysplat::parallel_for(0, N, GRAIN, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n += LANES) {
      const int count = static_cast<int>(std::min<int64_t>(LANES, end - n));
      const GaussianLanes g(m, qt, sc, n, count);
      vf v_mean[3] = {}, v_quat[4] = {}, v_scale[3] = {};  // summed over the cameras, in their order
      for (int64_t c = 0; c < C; ++c) {
        const Camera cam(cams.viewmats + 16 * c, cams.Ks + 9 * c, width, height);
        const int64_t i = c * N + n;
        const vi drawn = load_rows(rad + i, 1, count) > 0;
        const vf v_depth = gdepth ? load_rows(gdepth + i, 1, count) : vf{};
        vf v_p[3] = {vf{}, vf{}, v_depth};
        if (any_lane(drawn)) {
          const Projected s = project_lanes(cam, g, eps, near_plane, far_plane);
          const vf z = s.z, cxx = s.cxx + eps, cyy = s.cyy + eps, det = s.det;
          // conic = (cyy, -cxy, cxx) / det, with det = cxx cyy - cxy^2 after eps2d
          vf v_cxx{}, v_cxy{}, v_cyy{}, v_det{};
          if (gconic) {
            vf v_conic[3];
            load_columns(gconic + 3 * i, count, v_conic);
            const vf va = v_conic[0], vb = v_conic[1], vc = v_conic[2];
            v_det -= (va * cyy - vb * s.cxy + vc * cxx) / (det * det);
            v_cxx += vc / det, v_cyy += va / det, v_cxy -= vb / det;
          }
          if (gcomp) {  // sqrt(det_orig / det), whose gradient is zero where it is clamped at 0
            const vf ratio = s.det_orig / det;
            const vi unclamped = ratio > 0.0f;
            const vf v_ratio = load_rows(gcomp + i, 1, count) * 0.5f / lane_sqrt(ratio), v_det_orig = v_ratio / det;
            v_det = unclamped ? v_det - v_ratio * ratio / det : v_det;
            v_cxx = unclamped ? v_cxx + v_det_orig * s.cyy : v_cxx;
            v_cyy = unclamped ? v_cyy + v_det_orig * s.cxx : v_cyy;
            v_cxy = unclamped ? v_cxy - 2.0f * v_det_orig * s.cxy : v_cxy;
          }
          v_cxx += v_det * cyy, v_cyy += v_det * cxx, v_cxy -= 2.0f * v_det * s.cxy;
          // cov2d = H H^T
          vf v_H[2][3];
          for (int j = 0; j < 3; ++j) {
            v_H[0][j] = 2.0f * v_cxx * s.H[0][j] + v_cxy * s.H[1][j];
            v_H[1][j] = 2.0f * v_cyy * s.H[1][j] + v_cxy * s.H[0][j];
          }
          // H = T M, M = R(q) S
          vf v_R[3][3], v_S[3] = {};
          for (int a = 0; a < 3; ++a) {
            for (int b = 0; b < 3; ++b) {
              const vf v_M = s.T[0][a] * v_H[0][b] + s.T[1][a] * v_H[1][b];
              v_S[b] += v_M * s.Rq[a][b];
              v_R[a][b] = v_M * g.scale[b];
            }
          }
          vf v_q[4] = {};
          quaternion_backward(s.q, s.qnorm, v_R, v_q);
          for (int j = 0; j < 3; ++j) v_scale[j] = drawn ? v_scale[j] + v_S[j] : v_scale[j];
          for (int j = 0; j < 4; ++j) v_quat[j] = drawn ? v_quat[j] + v_q[j] : v_quat[j];
          // H = T M gives T's gradient; T = J R_w2c, and only J depends on the Gaussian
          vf v_T[2][3], v_J[2][3];
          for (int a = 0; a < 2; ++a) {
            for (int b = 0; b < 3; ++b) v_T[a][b] = v_H[a][0] * s.M[b][0] + v_H[a][1] * s.M[b][1] + v_H[a][2] * s.M[b][2];
          }
          for (int a = 0; a < 2; ++a) {
            for (int b = 0; b < 3; ++b) v_J[a][b] = v_T[a][0] * cam.R[b][0] + v_T[a][1] * cam.R[b][1] + v_T[a][2] * cam.R[b][2];
          }
          // J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], tx = z clamp(x/z): x unless clamped, else z * bound
          const vf z2 = z * z, z3 = z2 * z;
          vf v_z = -v_J[0][0] * cam.fx / z2 + 2.0f * v_J[0][2] * cam.fx * s.tx / z3 - v_J[1][1] * cam.fy / z2 +
                   2.0f * v_J[1][2] * cam.fy * s.ty / z3;
          const vf v_tx = -v_J[0][2] * cam.fx / z2, v_ty = -v_J[1][2] * cam.fy / z2;
          v_z = s.clamped_x ? v_z + v_tx * s.tx / z : v_z;
          v_z = s.clamped_y ? v_z + v_ty * s.ty / z : v_z;
          vf v_x = s.clamped_x ? vf{} : vf{} + v_tx, v_y = s.clamped_y ? vf{} : vf{} + v_ty;
          if (g2d) {  // u = fx x / z + cx, v = fy y / z + cy
            vf v_uv[2];
            load_columns(g2d + 2 * i, count, v_uv);
            const vf vu = v_uv[0], vv = v_uv[1];
            v_x += vu * cam.fx / z, v_y += vv * cam.fy / z;
            v_z -= (vu * cam.fx * s.p[0] + vv * cam.fy * s.p[1]) / z2;
          }
          v_p[0] = drawn ? v_x : vf{}, v_p[1] = drawn ? v_y : vf{};
          v_p[2] = drawn & s.in_depth ? v_depth + v_z : v_depth;  // outside the range z was a constant
        }
        // p = R_w2c mean + t
        for (int j = 0; j < 3; ++j) v_mean[j] += cam.R[0][j] * v_p[0] + cam.R[1][j] * v_p[1] + cam.R[2][j] * v_p[2];
      }
      store_columns(vm + 3 * n, count, v_mean);
      store_columns(vq + 4 * n, count, v_quat);
      store_columns(vs + 3 * n, count, v_scale);
    }
  });
  return {v_means, v_quats, v_scales};
}

// The real SH basis of sh.py at the unit direction (x, y, z), and its partial derivatives.
constexpr float C0 = 0.28209479177387814f, C1 = 0.4886025119029199f;
constexpr float C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                         0.5462742152960396f};
constexpr float C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                         -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

// The real SH basis up to `degree` at the unit direction (x, y, z) into b and, WithGradient, its
// derivatives d/dx, d/dy, d/dz into d; returns the number of functions. T is float (one Gaussian) or
// vf (one to a lane). Each function is written straight to its place (an intermediate table of all 64
// values was zero-filled and copied per call).
template <bool WithGradient, typename T>
int sh_basis(int degree, T x, T y, T z, T* b, T (*d)[3]) {
  const T xx = x * x, yy = y * y, zz = z * z, zero{};
  auto put = [&](int k, T value, T dx, T dy, T dz) {
    b[k] = value;
    if constexpr (WithGradient) d[k][0] = dx, d[k][1] = dy, d[k][2] = dz;
  };
  put(0, zero + C0, zero, zero, zero);
  if (degree < 1) return 1;
  put(1, -C1 * y, zero, zero - C1, zero);
  put(2, C1 * z, zero, zero, zero + C1);
  put(3, -C1 * x, zero - C1, zero, zero);
  if (degree < 2) return 4;
  put(4, C2[0] * x * y, C2[0] * y, C2[0] * x, zero);
  put(5, C2[1] * y * z, zero, C2[1] * z, C2[1] * y);
  put(6, C2[2] * (2 * zz - xx - yy), -2 * C2[2] * x, -2 * C2[2] * y, 4 * C2[2] * z);
  put(7, C2[3] * x * z, C2[3] * z, zero, C2[3] * x);
  put(8, C2[4] * (xx - yy), 2 * C2[4] * x, -2 * C2[4] * y, zero);
  if (degree < 3) return 9;
  put(9, C3[0] * y * (3 * xx - yy), C3[0] * 6 * x * y, C3[0] * 3 * (xx - yy), zero);
  put(10, C3[1] * x * y * z, C3[1] * y * z, C3[1] * x * z, C3[1] * x * y);
  put(11, C3[2] * y * (4 * zz - xx - yy), C3[2] * -2 * x * y, C3[2] * (4 * zz - xx - 3 * yy), C3[2] * 8 * y * z);
  put(12, C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[3] * -6 * x * z, C3[3] * -6 * y * z,
      C3[3] * (6 * zz - 3 * xx - 3 * yy));
  put(13, C3[4] * x * (4 * zz - xx - yy), C3[4] * (4 * zz - 3 * xx - yy), C3[4] * -2 * x * y, C3[4] * 8 * x * z);
  put(14, C3[5] * z * (xx - yy), C3[5] * 2 * x * z, C3[5] * -2 * y * z, C3[5] * (xx - yy));
  put(15, C3[6] * x * (xx - 3 * yy), C3[6] * 3 * (xx - yy), C3[6] * -6 * x * y, zero);
  return 16;
}

struct Direction {
  float raw[3], unit[3], norm;

  Direction(const float* mean, const float* campos) {
    for (int j = 0; j < 3; ++j) raw[j] = mean[j] - campos[j];
    norm = std::max(std::sqrt(raw[0] * raw[0] + raw[1] * raw[1] + raw[2] * raw[2]), 1e-12f);
    for (int j = 0; j < 3; ++j) unit[j] = raw[j] / norm;
  }
};

void check_sh(const at::Tensor& means, const at::Tensor& campos, const at::Tensor& coeffs, int64_t degree) {
  check_f32(means, "means");
  check_f32(campos, "camera positions");
  check_f32(coeffs, "SH coefficients");
  TORCH_CHECK(degree >= 0 && degree <= 3, "SH degree must be 0..3, got ", degree);
  TORCH_CHECK(coeffs.dim() == 3 && coeffs.size(0) == means.size(0) && coeffs.size(2) == 3 &&
                  coeffs.size(1) >= (degree + 1) * (degree + 1),
              "SH coefficients must be [N, K, 3] with K >= (degree + 1)^2");
}

// max(0, SH colour + 0.5) [C, N, 3] of each Gaussian seen from each camera centre campos [C, 3],
// LANES Gaussians at a time, one to a lane (one Gaussian at a time, each colour was a chain of 16
// dependent multiply-adds): their coefficients' columns by blocks of LANES x LANES where the rows
// divide into them (3 K a multiple of LANES: K = 16, as models keep them), else a lane at a time
at::Tensor sh_forward(int64_t degree, const at::Tensor& means, const at::Tensor& campos, const at::Tensor& coeffs) {
  check_sh(means, campos, coeffs, degree);
  const int64_t N = means.size(0), C = campos.size(0), K = coeffs.size(1);
  at::Tensor colors = at::empty({C, N, 3}, means.options());
  const float *m = means.data_ptr<float>(), *cp = campos.data_ptr<float>(), *sh = coeffs.data_ptr<float>();
  float* out = colors.data_ptr<float>();
  const int row = static_cast<int>(3 * K);
  tinysplat::parallel_for(0, N, GRAIN, [&](int64_t begin, int64_t end) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t n = begin; n < end; n += LANES) {
        const int count = static_cast<int>(std::min<int64_t>(LANES, end - n));
        vf raw[3];
        load_columns(m + 3 * n, count, raw);
        for (int j = 0; j < 3; ++j) raw[j] -= cp[3 * c + j];
        const vf norm = lane_max(lane_sqrt(raw[0] * raw[0] + raw[1] * raw[1] + raw[2] * raw[2]), splat(1e-12f));
        vf b[16];
        const int nb = sh_basis<false, vf>(degree, raw[0] / norm, raw[1] / norm, raw[2] / norm, b, nullptr);
        const float* g = sh + n * row;
        vf column[48];
        const int columns = 3 * nb;
        if (count == LANES && row % LANES == 0) {
          for (int first = 0; first < columns; first += LANES) load_block(g + first, row, column + first);
        } else {
          for (int j = 0; j < columns; ++j) column[j] = load_rows(g + j, row, count);
        }
        vf sum[3] = {};
        for (int k = 0; k < nb; ++k)
          for (int ch = 0; ch < 3; ++ch) sum[ch] += b[k] * column[3 * k + ch];
        for (int ch = 0; ch < 3; ++ch) sum[ch] = lane_max(sum[ch] + 0.5f, vf{});
        store_columns(out + 3 * (c * N + n), count, sum);
      }
    }
  });
  return colors;
}

// Gradients of means [N, 3] (through the view directions) and coefficients [N, K, 3]
std::tuple<at::Tensor, at::Tensor> sh_backward(int64_t degree, const at::Tensor& means, const at::Tensor& campos,
                                               const at::Tensor& coeffs, const at::Tensor& colors,
                                               const at::Tensor& v_colors) {
  check_sh(means, campos, coeffs, degree);
  check_f32(colors, "colours");
  check_f32(v_colors, "colour gradients");
  const int64_t N = means.size(0), C = campos.size(0), K = coeffs.size(1);
  // written row by row (zeros included) rather than zero-filled first: at 200k Gaussians of degree 3
  // the coefficients' gradient is 38 MB, and the pass over memory cost more than the arithmetic
  at::Tensor v_means = at::empty({N, 3}, means.options()), v_coeffs = at::empty_like(coeffs);
  const float *m = means.data_ptr<float>(), *cp = campos.data_ptr<float>(), *sh = coeffs.data_ptr<float>(),
              *col = colors.data_ptr<float>(), *gcol = v_colors.data_ptr<float>();
  float *vm = v_means.data_ptr<float>(), *vsh = v_coeffs.data_ptr<float>();
  tinysplat::parallel_for(0, N, GRAIN, [&](int64_t begin, int64_t end) {
    float b[16], d[16][3];
    for (int64_t n = begin; n < end; ++n) {
      const float* __restrict coeff = sh + n * K * 3;  // (the gradient's stores do not reload it)
      float* __restrict v_coeff = vsh + n * K * 3;
      std::fill(v_coeff, v_coeff + K * 3, 0.0f);
      float v_mean[3] = {0.0f, 0.0f, 0.0f};
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = c * N + n;
        float g[3];
        for (int ch = 0; ch < 3; ++ch) g[ch] = col[3 * i + ch] > 0.0f ? gcol[3 * i + ch] : 0.0f;  // the clamp at 0
        if (g[0] == 0.0f && g[1] == 0.0f && g[2] == 0.0f) continue;
        const Direction dir(m + 3 * n, cp + 3 * c);
        const int nb = sh_basis<true>(degree, dir.unit[0], dir.unit[1], dir.unit[2], b, d);
        float v_b[16];
        for (int k = 0; k < nb; ++k) {
          v_b[k] = 0.0f;
          for (int ch = 0; ch < 3; ++ch) {
            v_coeff[3 * k + ch] += b[k] * g[ch];
            v_b[k] += coeff[3 * k + ch] * g[ch];
          }
        }
        if (degree == 0) continue;
        // even and odd functions summed apart: two chains of additions side by side
        float v_unit[2][3] = {};
        for (int k = 0; k < nb; ++k)
          for (int j = 0; j < 3; ++j) v_unit[k % 2][j] += v_b[k] * d[k][j];
        for (int j = 0; j < 3; ++j) v_unit[0][j] += v_unit[1][j];
        const float* v_u = v_unit[0];
        const float along = v_u[0] * dir.unit[0] + v_u[1] * dir.unit[1] + v_u[2] * dir.unit[2];
        for (int j = 0; j < 3; ++j) v_mean[j] += (v_u[j] - dir.unit[j] * along) / dir.norm;
      }
      for (int j = 0; j < 3; ++j) vm[3 * n + j] = v_mean[j];
    }
  });
  return {v_means, v_coeffs};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinysplat_cpu, m) {
  m.def("project_forward(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, int width, "
        "int height, float eps2d, float near_plane, float far_plane, bool with_compensation) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("project_backward(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, int width, "
        "int height, float eps2d, float near_plane, float far_plane, Tensor radii, Tensor? v_means2d, "
        "Tensor? v_conics, Tensor? v_depths, Tensor? v_compensations) -> (Tensor, Tensor, Tensor)");
  m.def("sh_forward(int degree, Tensor means, Tensor campos, Tensor coeffs) -> Tensor");
  m.def("sh_backward(int degree, Tensor means, Tensor campos, Tensor coeffs, Tensor colors, Tensor v_colors) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tinysplat_cpu, CPU, m) {
  m.impl("project_forward", &project_forward);
  m.impl("project_backward", &project_backward);
  m.impl("sh_forward", &sh_forward);
  m.impl("sh_backward", &sh_backward);
}
