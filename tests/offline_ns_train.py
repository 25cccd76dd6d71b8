"""`ns-train` for a method whose model builds LPIPS (nerfacto, splatfacto, ...) on a machine without
AlexNet's weights and without a network: as tinysplat-compare loads such runs, the metric gets a
stand-in network that fails if it is ever used."""

import sys

from tinysplat_ns.compared_runs import lpips_without_download

if __name__ == "__main__":  # nerfacto's datamanager starts worker processes that import this file
    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train", *sys.argv[1:]]
    with lpips_without_download():
        entrypoint()
