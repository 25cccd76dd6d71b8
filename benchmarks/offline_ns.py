"""`ns-train` or `ns-eval` of a method whose model builds LPIPS (splatfacto, nerfacto, ...) on a
machine without AlexNet's weights and without a network (the GPU machine, the tests): LPIPS gets a
stand-in network that scores NaN, so the run is scored by PSNR and SSIM alone.

    python benchmarks/offline_ns.py train splatfacto --data ...
    python benchmarks/offline_ns.py eval --load-config .../config.yml --output-path eval.json
"""

import sys

import torch

from tinysplat_ns.compare.runs import lpips_without_download


class LpipsNotScored(torch.nn.Module):
    def __init__(self, *_, **__):
        super().__init__()

    def forward(self, img1, *_, **__):
        return torch.full((img1.shape[0], 1, 1, 1), float("nan"), device=img1.device)


if __name__ == "__main__":  # nerfacto's datamanager starts worker processes that import this file
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "eval"):
        sys.exit("usage: offline_ns.py train|eval ARGS (those of ns-train or ns-eval)")
    if sys.argv[1] == "train":
        from nerfstudio.scripts.train import entrypoint
    else:
        from nerfstudio.scripts.eval import entrypoint
    sys.argv = [f"ns-{sys.argv[1]}", *sys.argv[2:]]
    with lpips_without_download(LpipsNotScored):
        entrypoint()
