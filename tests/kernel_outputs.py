"""What the compiled kernels compute on fixed inputs, forward and backward, by whichever build this
process loads (CXX picks the compiler): `python tests/kernel_outputs.py OUT.pt` saves it, at two
threads, with the name of the build that computed it, for a test to set beside another build's."""

import sys

import torch


def kernel_outputs() -> dict:
    from tinysplat_ns.core.kernels import bilateral_grid, build, ssim
    from tinysplat_ns.core.rasterization import rasterization

    assert build.available()
    gen = torch.Generator().manual_seed(0)
    n, width, height = 3000, 160, 120
    means = (torch.randn(n, 3, generator=gen) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([0.0, 0.0, 4.0])).requires_grad_()
    quats = torch.randn(n, 4, generator=gen).requires_grad_()
    scales = (0.02 + 0.1 * torch.rand(n, 3, generator=gen)).requires_grad_()
    opacities = (0.05 + 0.9 * torch.rand(n, generator=gen)).requires_grad_()
    sh = (0.3 * torch.randn(n, 16, 3, generator=gen)).requires_grad_()
    K = torch.tensor([[[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]]])
    rgb, alpha, _ = rasterization(
        means, quats, scales, opacities, sh, torch.eye(4)[None], K, width, height, sh_degree=3, backend="cpp"
    )
    grid = (torch.eye(4)[:3].reshape(12, 1, 1, 1) + 0.2 * torch.randn(12, 8, 16, 16, generator=gen)).requires_grad_()
    graded = bilateral_grid.apply(grid, rgb[0])
    target = torch.rand(rgb.shape[1:], generator=gen)
    window = torch.exp(-((torch.arange(11.0) - 5) ** 2) / (2 * 1.5**2))
    loss = (graded - target).abs().mean() + ssim.ssim(graded, target, window / window.sum())
    with torch.no_grad():  # the value alone: its own op
        ssim_alone = ssim.ssim(graded, target, window / window.sum())
    grads = torch.autograd.grad(loss, [means, quats, scales, opacities, sh, grid])
    named = zip(("means", "quats", "scales", "opacities", "sh", "grid"), grads, strict=True)
    return {
        "library": build.library(),
        "rgb": rgb.detach(), "alpha": alpha.detach(), "loss": loss.detach(), "ssim alone": ssim_alone,
        **{f"grad {name}": g for name, g in named},
    }  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    torch.save(kernel_outputs(), sys.argv[1])


def recorded_kernel_calls() -> list:
    """Every call kernel_outputs() makes into the compiled library, in order: (op name, its arguments
    as they went in, what it returned)."""
    from tinysplat_ns.core.kernels import build

    calls, library = [], build.ops()

    class Recorder:
        def __getattr__(self, name):
            def call(*args):
                inputs = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
                out = getattr(library, name)(*args)
                calls.append((name, inputs, out if isinstance(out, tuple) else (out,)))
                return out

            return call

    ops, build.ops = build.ops, Recorder
    try:
        kernel_outputs()
    finally:
        build.ops = ops
    return calls
