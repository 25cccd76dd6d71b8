"""The core runs on torch alone: no Nerfstudio import, and on a CPU no gsplat CUDA op (loading
gsplat's CUDA backend starts a CUDA build on these machines)."""

import subprocess
import sys
import textwrap


def test_cpu_render_loss_backward_and_densify_need_neither_nerfstudio_nor_gsplat_cuda():
    script = textwrap.dedent(
        """
        import sys, torch
        from tinysplat_ns.core.rasterization import rasterization
        from tinysplat_ns.core.strategies.adc import ADC
        from tinysplat_ns.core.losses.base import LossInputs
        from tinysplat_ns.core.losses.composite import PUBLISHED_3DGS, WeightedLoss, parse_weights
        from tinysplat_ns.core.losses.registry import available_terms

        n = 500
        params = torch.nn.ParameterDict({
            "means": torch.randn(n, 3) * 0.5 + torch.tensor([0.0, 0.0, 4.0]),
            "scales": torch.full((n, 3), -3.0), "quats": torch.randn(n, 4),
            "opacities": torch.zeros(n, 1), "colors": torch.rand(n, 3),
        })
        optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
        strategy = ADC(refine_start_iter=0, refine_every=1, grow_grad2d=0.0)
        strategy.set_budget(700)
        state = strategy.initialize_state()
        K = torch.tensor([[[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]])
        terms = available_terms()
        weights = parse_weights(PUBLISHED_3DGS + ("scale-reg=0.01",), list(terms))
        loss_fn = WeightedLoss({name: terms[name]() for name in weights}, weights)
        for step in range(1, 3):
            img, alpha, info = rasterization(
                params["means"], params["quats"], params["scales"].exp(), params["opacities"].sigmoid()[:, 0],
                params["colors"], torch.eye(4)[None], K, 64, 48, absgrad=True)
            strategy.step_pre_backward(params, optimizers, state, step, info)
            sum(loss_fn(LossInputs(img[0], torch.rand(48, 64, 3), params)).values()).backward()
            for opt in optimizers.values():
                opt.step()
            strategy.step_post_backward(params, optimizers, state, step, info)
        print(len(params["means"]), "nerfstudio" in sys.modules, "gsplat.cuda._backend" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    count, nerfstudio, gsplat_cuda = out.stdout.split()
    assert int(count) == 700  # every Gaussian asked to grow; growth stopped at the budget
    assert nerfstudio == "False" and gsplat_cuda == "False"
