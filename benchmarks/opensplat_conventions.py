"""Diagnosis of OpenSplat's scoring: its `.ply` (`--keep-crs`, transforms.json's frame) rendered for one
view by the rules its CPU rasterizer keeps (read from its source at 15b7e80: forward alpha capped at
0.999, each Gaussian drawn in a box of 3 marginal sigmas + 2 px, no near-plane cull, its fixed background
colour), each rule switchable, against the photo and against its own `--val-render` of that view.
Written here in numpy from that description; slow, for one view.

    python benchmarks/opensplat_conventions.py RUN/opensplat.ply RUN/scene 0020.jpg RUN/renders/2000.png

(RUN: a kept `benchmarks/opensplat.py --val-image` run: its scene copy, .ply and renders.)
"""
import json, sys
from pathlib import Path
import numpy as np
import imageio.v3 as iio
from plyfile import PlyData

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
OS_BG = np.array([0.6130, 0.0101, 0.3984], np.float32)


def load(ply):
    v = PlyData.read(ply)["vertex"]
    g = lambda *n: np.stack([np.asarray(v[k], np.float32) for k in n], -1)
    rest = [p.name for p in v.properties if p.name.startswith("f_rest_")]
    rest = sorted(rest, key=lambda s: int(s.split("_")[-1]))
    fr = g(*rest).reshape(len(v), 3, -1).transpose(0, 2, 1)  # N, K-1, 3
    return dict(means=g("x", "y", "z"), dc=g("f_dc_0", "f_dc_1", "f_dc_2"), rest=fr,
                opac=1 / (1 + np.exp(-g("opacity")[:, 0])), scales=np.exp(g("scale_0", "scale_1", "scale_2")),
                quats=g("rot_0", "rot_1", "rot_2", "rot_3"))


def rotmat(q):
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def render(G, c2w, fx, fy, W, H, degree=2, bg=OS_BG, alpha_cap=0.999, box=True, near=None, done_t=1e-4):
    c2w = np.array(c2w, np.float64)
    R = c2w[:3, :3] @ np.diag([1, -1, -1]); T = c2w[:3, 3]
    Rw = R.T; tw = -Rw @ T
    p = G["means"].astype(np.float64) @ Rw.T + tw
    M = rotmat(G["quats"].astype(np.float64)) * G["scales"][:, None, :]
    cov3 = M @ M.transpose(0, 2, 1)
    z = p[:, 2]
    limx, limy = 1.3 * 0.5 * W / fx, 1.3 * 0.5 * H / fy
    tx = z * np.clip(p[:, 0] / z, -limx, limx); ty = z * np.clip(p[:, 1] / z, -limy, limy)
    J = np.zeros((len(p), 2, 3)); J[:, 0, 0] = fx / z; J[:, 0, 2] = -fx * tx / z**2
    J[:, 1, 1] = fy / z; J[:, 1, 2] = -fy * ty / z**2
    Tm = J @ Rw
    cov2 = Tm @ cov3 @ Tm.transpose(0, 2, 1)
    cov2[:, 0, 0] += 0.3; cov2[:, 1, 1] += 0.3
    det = np.maximum(cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2, 1e-6)
    A, B, Cc = cov2[:, 1, 1] / det, -cov2[:, 0, 1] / det, cov2[:, 0, 0] / det
    wz = np.maximum(z, 1e-6)
    u = fx * p[:, 0] / wz + W / 2 - 0.5; v = fy * p[:, 1] / wz + H / 2 - 0.5
    d = G["means"] - T; d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    x, y, zz = d.T
    basis = [np.full_like(x, C0), -C1 * y, C1 * zz, -C1 * x,
             C2[0] * x * y, C2[1] * y * zz, C2[2] * (2 * zz * zz - x * x - y * y), C2[3] * x * zz, C2[4] * (x * x - y * y)]
    nb = [1, 4, 9][degree]
    coeffs = np.concatenate([G["dc"][:, None], G["rest"]], 1)
    rgb = sum(basis[k][:, None] * coeffs[:, k] for k in range(nb))
    rgb = np.maximum(rgb + 0.5, 0).astype(np.float32)
    order = np.argsort(z, kind="stable")
    img = np.zeros((H, W, 3), np.float32); Tr = np.ones((H, W), np.float32); done = np.zeros((H, W), bool)
    sx, sy = 3 * np.sqrt(cov2[:, 0, 0]), 3 * np.sqrt(cov2[:, 1, 1])
    for gid in order:
        if near is not None and z[gid] < near:
            continue
        if not (np.isfinite(u[gid]) and np.isfinite(v[gid])) or z[gid] <= 0:
            continue  # its projection sends these far off screen (w clamped at 1e-6)
        if box:
            r0, r1 = max(0, int(np.floor(v[gid] - sy[gid])) - 2), min(H, int(np.ceil(v[gid] + sy[gid])) + 2)
            c0, c1 = max(0, int(np.floor(u[gid] - sx[gid])) - 2), min(W, int(np.ceil(u[gid] + sx[gid])) + 2)
        else:  # alpha >= 1/255 everywhere it reaches
            s = np.log(max(G["opac"][gid], 1 / 255) * 255)
            hx, hy = np.sqrt(2 * s * Cc[gid] / (A[gid] * Cc[gid] - B[gid] ** 2)), np.sqrt(2 * s * A[gid] / (A[gid] * Cc[gid] - B[gid] ** 2))
            r0, r1 = max(0, int(np.floor(v[gid] - hy)) - 1), min(H, int(np.ceil(v[gid] + hy)) + 2)
            c0, c1 = max(0, int(np.floor(u[gid] - hx)) - 1), min(W, int(np.ceil(u[gid] + hx)) + 2)
        if r0 >= r1 or c0 >= c1:
            continue
        jj, ii = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        xc, yc = u[gid] - jj, v[gid] - ii
        sig = 0.5 * (A[gid] * xc * xc + Cc[gid] * yc * yc) + B[gid] * xc * yc
        al = np.minimum(alpha_cap, G["opac"][gid] * np.exp(-sig)).astype(np.float32)
        sub_done = done[r0:r1, c0:c1]; sub_T = Tr[r0:r1, c0:c1]
        m = (~sub_done) & (sig >= 0) & (al >= 1 / 255)
        nT = sub_T * (1 - al)
        fin = m & (nT <= done_t)
        sub_done[fin] = True
        m &= ~fin
        img[r0:r1, c0:c1][m] += (al * sub_T)[m][:, None] * rgb[gid]
        sub_T[m] = nT[m]
    return img + Tr[..., None] * bg


def psnr(a, b):
    return float(-10 * np.log10(np.mean((np.clip(a, 0, 1) - b) ** 2)))


if __name__ == "__main__":
    ply, scene, name, own = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    meta = json.loads((scene / "transforms.json").read_text())
    f = next(f for f in meta["frames"] if Path(f["file_path"]).name == name)
    # OpenSplat centres and scales the poses; with --keep-crs its .ply is back in transforms.json's frame
    G = load(ply)
    photo = iio.imread(scene / "images" / name)[..., :3].astype(np.float32) / 255
    own_img = iio.imread(own)[..., :3].astype(np.float32) / 255
    print(len(G["means"]), "Gaussians; its own render vs photo", round(psnr(own_img, photo), 2))
    variants = {
        "its conventions": {},
        "our background": dict(bg=np.array([0.1490, 0.1647, 0.2157], np.float32)),
        "alpha cap 0.99": dict(alpha_cap=0.99),
        "no 3-sigma box": dict(box=False),
        "near plane 0.01": dict(near=0.01),
        "all of ours": dict(bg=np.array([0.1490, 0.1647, 0.2157], np.float32), alpha_cap=0.99, box=False),
    }
    for label, kw in variants.items():
        img = render(G, f["transform_matrix"], f["fl_x"], f["fl_y"], f["w"], f["h"], **kw)
        print(f"{label:>18}: vs photo {psnr(img, photo):6.2f} dB, vs its render {psnr(img, own_img):6.2f} dB")
