"""`ns-train` with TinySplat's loss patched as the tests need, set by environment variables:
DIVERGE_FROM_STEP=N: the loss is NaN from step N on, as a diverging run's (the NaN-streak exit);
STEP_SECONDS=S: each step takes S seconds longer (time for a second Ctrl-C within one step)."""

import math
import os
import sys
import time

from tinysplat_ns.tinysplat_model import TinySplatModel

if __name__ == "__main__":
    from nerfstudio.scripts.train import entrypoint

    first_bad_step = int(os.environ.get("DIVERGE_FROM_STEP", sys.maxsize))
    extra_seconds = float(os.environ.get("STEP_SECONDS", 0))
    loss_dict = TinySplatModel.get_loss_dict

    def patched_loss_dict(self, outputs, batch, metrics_dict=None):
        losses = loss_dict(self, outputs, batch, metrics_dict)
        time.sleep(extra_seconds)
        if self.step >= first_bad_step:
            losses = {name: value * math.nan for name, value in losses.items()}
        return losses

    TinySplatModel.get_loss_dict = patched_loss_dict
    sys.argv = ["ns-train", *sys.argv[1:]]
    entrypoint()
