"""Quantisation shared by the compressed splat formats (`compressed_ply.py`, `spz.py`, `sog.py`):
the spatial order their files are written in, unit-range integer packing, "smallest three"
quaternions and the k-means codebooks. numpy in, numpy out."""

import numpy as np
import torch
from torch import Tensor

SQRT_HALF = np.sqrt(0.5)


def morton_order(means: np.ndarray, bits: int = 10) -> np.ndarray:
    """Row order along a Z-order curve of the centres (2^bits cells a side over their bounding
    box): neighbours in space become neighbours in the file, so per-chunk ranges are tight and
    images compress."""
    low, high = means.min(axis=0), means.max(axis=0)
    extent = np.where(high > low, high - low, 1.0)
    cells = np.clip(((means - low) / extent * (1 << bits)).astype(np.int64), 0, (1 << bits) - 1)
    code = np.zeros(len(means), dtype=np.int64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + (2 - axis))
    return np.argsort(code, kind="stable")


def pack_unorm(value: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] -> the nearest of 2^bits levels, as an unsigned integer."""
    top = (1 << bits) - 1
    return np.clip(np.floor(value * top + 0.5), 0, top).astype(np.uint32)


def unpack_unorm(value: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return (value & top).astype(np.float64) / top


def opacity_logits(fraction: np.ndarray) -> np.ndarray:
    """[N] opacities stored as bytes / 255 -> [N, 1] logits; bytes 0 and 255 (infinite logits) read as
    the middle of their step."""
    alpha = np.clip(fraction, 0.5 / 255, 254.5 / 255)
    return np.log(alpha / (1 - alpha))[:, None]


def smallest_three(quats: np.ndarray) -> tuple:
    """Unit quaternions (any component order) as (index of the largest component [N], the other
    three in order [N, 3], each in [-1/sqrt 2, 1/sqrt 2]) with the largest made positive."""
    q = quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    q *= np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    others = np.array([[j for j in range(4) if j != i] for i in range(4)])[largest]
    return largest, np.take_along_axis(q, others, axis=1)


def from_smallest_three(largest: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The inverse of `smallest_three`: [N, 4] unit quaternions, the largest component rebuilt."""
    q = np.zeros((len(largest), 4), dtype=np.float64)
    slots = np.array([[j for j in range(4) if j != i] for i in range(4)])[largest]
    np.put_along_axis(q, slots, others, axis=1)
    q[np.arange(len(q)), largest] = np.sqrt(np.maximum(0.0, 1.0 - (others * others).sum(axis=1)))
    return q


def kmeans_1d(values: np.ndarray, k: int = 256, iterations: int = 20, bins: int = 1024) -> tuple:
    """A codebook of k scalars for values: (sorted centroids [k] float32, each value's nearest
    centroid's index [same shape] uint8/16). Lloyd's k-means with each value weighted by
    1 / sqrt(density) (a 1024-bin histogram's), so the rare values at the tails (the few largest
    Gaussians, which cover the most pixels) still get centroids near them: plain k-means left
    log scales 1.4 off there. One sort; each iteration is a binary search of the midpoints and
    prefix sums."""
    flat = values.reshape(-1).astype(np.float64)
    ordered = np.sort(flat)
    counts, edges = np.histogram(ordered, bins=bins)
    weights = 1.0 / np.sqrt(counts[np.clip(np.searchsorted(edges, ordered, side="right") - 1, 0, bins - 1)])
    weight_sums = np.concatenate([[0.0], np.cumsum(weights)])
    moment_sums = np.concatenate([[0.0], np.cumsum(weights * ordered)])
    # start from the weighted quantiles
    centroids = ordered[np.clip(np.searchsorted(weight_sums[1:], (np.arange(k) + 0.5) / k * weight_sums[-1]), 0, len(ordered) - 1)]
    for _ in range(iterations):
        cuts = np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2)
        starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(ordered)]])
        mass = weight_sums[ends] - weight_sums[starts]
        updated = np.where(mass > 0, (moment_sums[ends] - moment_sums[starts]) / np.where(mass > 0, mass, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    centroids = centroids.astype(np.float32)
    # each value to its nearest float32 centroid (what a reader will see)
    upper = np.clip(np.searchsorted(centroids, flat), 1, k - 1)
    nearer_low = np.abs(flat - centroids[upper - 1]) <= np.abs(centroids[upper] - flat)
    labels = np.where(nearer_low, upper - 1, upper)
    return centroids, labels.astype(np.uint8 if k <= 256 else np.uint16).reshape(values.shape)


def kmeans(points: Tensor, k: int, iterations: int, generator: torch.Generator, block: int = 8192) -> tuple:
    """Lloyd's k-means of [N, D] float32 rows: (centroids [k, D], labels [N] int64). Starts from k
    distinct rows picked by `generator`; an empty cluster keeps its centroid."""
    centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    labels = torch.empty(len(points), dtype=torch.int64)
    for iteration in range(iterations + 1):
        squared = (centroids * centroids).sum(dim=1)
        for start in range(0, len(points), block):
            rows = points[start : start + block]
            # |x - c|^2 less |x|^2 (the same for every c)
            labels[start : start + block] = torch.addmm(squared, rows, centroids.T, alpha=-2).argmin(dim=1)
        if iteration == iterations:
            break
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k).to(points.dtype)[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids, labels


def palette(points: np.ndarray, k: int, iterations: int, seed: int = 0) -> tuple:
    """About k centroids of [N, D] rows by two-level k-means: sqrt(k) groups first, then each
    group's rows into centroids in proportion to its size. Each level costs N x sqrt(k) distances
    a pass where flat k-means costs N x k (64k centroids of 1M rows: minutes a pass on two cores).
    -> (centroids [<= k, D] float32, labels [N] int64)."""
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    groups = max(1, min(len(x), int(round(np.sqrt(k)))))
    _, group_of = kmeans(x, groups, iterations, generator)
    sizes = torch.bincount(group_of, minlength=groups)
    # floor(share of (k - groups)) + 1 for every non-empty group: never more than k in all
    shares = torch.where(sizes > 0, (sizes * (k - groups)) // max(len(x), 1) + 1, 0)
    shares = torch.minimum(shares, sizes)
    centroids, labels, offset = [], torch.empty(len(x), dtype=torch.int64), 0
    for group in range(groups):
        members = torch.nonzero(group_of == group)[:, 0]
        if len(members) == 0:
            continue
        local, local_labels = kmeans(x[members], int(shares[group]), iterations, generator)
        centroids.append(local)
        labels[members] = local_labels + offset
        offset += len(local)
    return torch.cat(centroids).numpy(), labels.numpy()
