"""Densification strategies: the CPU ops against the published formulas, Adam moments moving with
the Gaussians, each strategy's contract on the real scene, the Gaussian budget, resuming mid-run,
and a strategy from another package found through its entry point."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scene import scene_dir
from training import build_trainer, train_steps

from tinysplat_ns.core.strategies import ops

BIN = Path(sys.executable).parent
FAST_REFINE = {  # densify from step 20, every 20 steps, in a short run
    "pipeline__model__adc__refine_start_iter": 20,
    "pipeline__model__adc__refine_every": 20,
    "pipeline__model__adc__reset_every": 60,
    "pipeline__model__mcmc__refine_start_iter": 20,
    "pipeline__model__mcmc__refine_every": 20,
}


def test_relocation_matches_published_formula():
    """3DGS-MCMC (Kheradmand et al. 2024), Eq. 9, written out term by term in float64:
    o' = 1 - (1 - o)^(1/N), s' = o / (sum_{i=1..N} sum_{k=0..i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1)) s."""
    gen = torch.Generator().manual_seed(0)
    opacities = torch.rand(200, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    ratios = torch.randint(1, 52, (200,), generator=gen)
    ratios[:3] = torch.tensor([1, 2, 51])
    scales = torch.rand(200, 3, generator=gen, dtype=torch.float64) + 0.1
    new_o, new_s = ops.compute_relocation(opacities, scales, ratios)
    for o, n, s, got_o, got_s in zip(opacities.tolist(), ratios.tolist(), scales, new_o, new_s, strict=True):
        want_o = 1 - (1 - o) ** (1 / n)
        denominator = sum(
            math.comb(i - 1, k) * (-1) ** k * want_o ** (k + 1) / math.sqrt(k + 1)
            for i in range(1, n + 1)
            for k in range(i)
        )
        assert got_o.item() == pytest.approx(want_o, rel=1e-12)
        torch.testing.assert_close(got_s, s * o / denominator, rtol=1e-9, atol=0)
    assert torch.allclose(new_s[ratios == 1], scales[ratios == 1])  # one copy: unchanged


def adam_params(n: int):
    """Parameters with Adam moments that differ per Gaussian (row i of every moment holds i)."""
    gen = torch.Generator().manual_seed(0)
    params = torch.nn.ParameterDict(
        {
            "means": torch.randn(n, 3, generator=gen),
            "scales": torch.randn(n, 3, generator=gen) - 3,
            "quats": torch.randn(n, 4, generator=gen),
            "opacities": torch.randn(n, 1, generator=gen),
        }
    )
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    for name, p in params.items():
        p.grad = torch.ones_like(p)
        optimizers[name].step()
        state = optimizers[name].state[p]
        ids = torch.arange(n, dtype=torch.float32).reshape(-1, *([1] * (p.dim() - 1)))
        state["exp_avg"] = ids.expand_as(p).clone()
        state["exp_avg_sq"] = ids.expand_as(p).clone() * 10
    return params, optimizers


def moments(params, optimizers, name="means"):
    state = optimizers[name].state[params[name]]
    return state["exp_avg"][:, 0], state["exp_avg_sq"][:, 0]


def test_adc_clone_and_split_carry_moments():
    """gsplat's clone and split, through our ADC: the Gaussians left alone keep their moments, the
    clones and split products start from zero, the split originals are gone."""
    from tinysplat_ns.core.strategies.adc import ADC

    params, optimizers = adam_params(10)
    with torch.no_grad():
        params["scales"][:3] = math.log(0.001)  # small: cloned
        params["scales"][3:] = math.log(1.0)  # large: split
    adc = ADC(grow_grad2d=0.5)
    state = {"grad2d": torch.tensor([1.0] * 6 + [0.0] * 4), "count": torch.ones(10), "scene_scale": 1.0}
    n_clone, n_split = adc._grow_gs(params, optimizers, state, step=600)
    assert (n_clone, n_split) == (3, 3) and len(params["means"]) == 16
    for name in params:
        m1, m2 = moments(params, optimizers, name)
        kept = torch.tensor([0.0, 1, 2, 6, 7, 8, 9])  # then the 3 clones, then 6 split products
        torch.testing.assert_close(m1, torch.cat([kept, torch.zeros(9)]))
        torch.testing.assert_close(m2, torch.cat([kept * 10, torch.zeros(9)]))


def test_method_adam_is_torch_adam_through_a_clone_and_split():
    """The method's optimizers (PyTorch's fused Adam) take the steps of PyTorch's per-op Adam, before
    and after ADC's surgery replaces the tensors and their moments (fused keeps `step` as a tensor)."""
    from tinysplat_ns.core.strategies.adc import ADC
    from tinysplat_ns.tinysplat_config import tinysplat_trainer

    configs = tinysplat_trainer().optimizers
    runs = []
    for fused in (True, False):
        params, _ = adam_params(10)
        optimizers = {}
        for name, p in params.items():
            config = configs[name]["optimizer"]
            optimizers[name] = config.setup([p]) if fused else torch.optim.Adam([p], lr=config.lr, eps=config.eps)
            assert optimizers[name].defaults["fused"] is (True if fused else None)
        gen = torch.Generator().manual_seed(1)
        for step in range(6):
            if step == 3:
                with torch.no_grad():
                    params["scales"][:3] = math.log(0.001)
                    params["scales"][3:6] = math.log(1.0)
                state = {"grad2d": torch.tensor([1.0] * 6 + [0.0] * 4), "count": torch.ones(10), "scene_scale": 1.0}
                torch.manual_seed(0)  # the split's samples
                assert ADC(grow_grad2d=0.5)._grow_gs(params, optimizers, state, step=600) == (3, 3)
            for name, p in params.items():
                p.grad = torch.randn(p.shape, generator=gen)
                optimizers[name].step()
        runs.append({name: p.detach().clone() for name, p in params.items()})
    for name in runs[0]:
        assert runs[0][name].shape[0] == 16
        torch.testing.assert_close(runs[0][name], runs[1][name], rtol=1e-5, atol=1e-6)


def adc_steps(adc, steps):
    """Opaque Gaussians in front of a camera through ADC's hooks at `steps`: whether each step
    capped their opacities (a reset), and the strategy's state."""
    from tinysplat_ns.core.rasterization import rasterization

    params, optimizers = adam_params(50)
    with torch.no_grad():
        params["means"][:, 2] += 4.0  # in front of the camera
    state = adc.initialize_state(scene_scale=1.0)
    K = torch.tensor([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]])
    resets = []
    for step in steps:
        with torch.no_grad():
            params["opacities"].fill_(2.0)  # sigmoid: 0.88
        image, _, info = rasterization(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"][:, 0]),
            torch.rand(50, 3), torch.eye(4)[None], K, 32, 32,
        )  # fmt: skip
        adc.step_pre_backward(params, optimizers, state, step, info)
        image.sum().backward()
        adc.step_post_backward(params, optimizers, state, step, info)
        resets.append(bool(torch.sigmoid(params["opacities"]).max() <= 2 * adc.prune_opa + 1e-6))
    return resets, state


def test_adc_resets_opacities_at_its_interval_and_not_before_the_first_step():
    """gsplat 1.4 caps every opacity at 2 * prune_opa at step 0 too, which crushed the SfM points'
    0.1 and a start from a trained splat; ours first resets at step reset_every (as 3DGS does)."""
    from tinysplat_ns.core.strategies.adc import ADC

    resets, state = adc_steps(ADC(refine_start_iter=1000, reset_every=30), (0, 30))
    assert resets == [False, True]
    assert state["count"].sum() > 0  # step 0's statistics gathered all the same


@pytest.mark.parametrize("fixed", [True, False])
def test_adc_over_a_fixed_background_resets_opacities_where_refinement_starts_too(fixed):
    """3DGS's extra reset over white, for a run whose background is one colour (the model says so)."""
    from tinysplat_ns.core.strategies.adc import RESET_RECOVERY_STEPS, ADC

    adc = ADC(refine_start_iter=10, reset_every=1000)
    adc.set_fixed_background(fixed)
    resets, _ = adc_steps(adc, (9, 10, 11, 1000))
    assert resets == [False, fixed, False, True]
    assert adc.upset(10) == adc.upset(9 + RESET_RECOVERY_STEPS) == fixed  # checkpoints wait for it to heal
    assert not adc.upset(10 + RESET_RECOVERY_STEPS) and not adc.upset(9)


def test_budget_removal_keeps_each_survivors_moments():
    params, optimizers = adam_params(100)
    order = params["opacities"].detach().flatten().argsort(descending=True)
    means = params["means"].detach().clone()
    ops.enforce_budget(params, optimizers, {}, 60)
    survivors = order[:60].sort().values  # the 60 most opaque, in their original order
    assert len(params["means"]) == 60
    torch.testing.assert_close(params["means"].detach(), means[survivors])
    for name in params:
        m1, m2 = moments(params, optimizers, name)
        torch.testing.assert_close(m1, survivors.float())
        torch.testing.assert_close(m2, survivors.float() * 10)


def test_sample_add_appends_with_fresh_moments():
    params, optimizers = adam_params(100)
    ops.sample_add(params, optimizers, {}, 20, min_opacity=0.005)
    m1, m2 = moments(params, optimizers)
    assert len(params["means"]) == 120
    assert torch.equal(m1[:100], torch.arange(100.0)) and torch.equal(m2[:100], torch.arange(100.0) * 10)
    assert torch.count_nonzero(m1[100:]) == 0 and torch.count_nonzero(m2[100:]) == 0


def test_relocate_moves_dead_onto_live_and_resets_their_moments():
    params, optimizers = adam_params(100)
    dead = torch.zeros(100, dtype=torch.bool)
    dead[:10] = True
    keep = params["means"].detach().clone()
    ops.relocate(params, optimizers, {}, dead, min_opacity=0.005)
    means = params["means"].detach()
    assert torch.equal(means[10:], keep[10:])  # live ones keep their place...
    for i in range(10):  # ...and each dead one now sits on one of them
        assert (means[10:] == means[i]).all(-1).any()
    m1, _ = moments(params, optimizers)
    sources = [j for j in range(10, 100) if (means[:10] == means[j]).all(-1).any()]
    assert torch.count_nonzero(m1[sources]) == 0  # sampled: restart
    untouched = [j for j in range(10, 100) if j not in sources]
    assert torch.equal(m1[untouched], torch.tensor(untouched, dtype=torch.float32))


def test_position_noise_is_shaped_by_the_covariance_and_spares_opaque_gaussians():
    n = 4000
    params = torch.nn.ParameterDict(
        {
            "means": torch.zeros(n, 3),
            "scales": torch.log(torch.tensor([[0.5, 0.05, 0.05]])).repeat(n, 1),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            "opacities": torch.logit(torch.tensor([[0.001]] * (n // 2) + [[0.9]] * (n // 2))),
        }
    )
    torch.manual_seed(0)
    ops.inject_noise_to_position(params, scale=1.0)
    moved = params["means"].detach()
    transparent, opaque = moved[: n // 2], moved[n // 2 :]
    # noise = covariance @ N(0, I) * sigmoid(100 (1 - o - 0.995)) (3DGS-MCMC's gate): std along x
    # is 0.5^2 times the gate, along y and z 0.05^2 times it
    gate = 1 / (1 + math.exp(-100 * (1 - 0.001 - 0.995)))
    assert transparent[:, 0].std() == pytest.approx(0.25 * gate, rel=0.1)
    assert transparent[:, 1].std() == pytest.approx(0.0025 * gate, rel=0.1)
    assert opaque.abs().max() < 1e-6


def run_strategy(tmp_path, strategy, steps, **overrides):
    trainer = build_trainer(scene_dir(), tmp_path, pipeline__model__strategy=strategy, **FAST_REFINE, **overrides)
    counts, losses = [], []

    def watch(step, loss):
        counts.append(len(trainer.pipeline.model.means))
        losses.append(loss)

    train_steps(trainer, range(steps), watch)
    return trainer, counts, losses


@pytest.mark.parametrize("strategy", ["adc", "mcmc", "none"])
def test_each_strategy_trains_the_real_scene(tmp_path, strategy):
    # ADC: a pruning threshold just under the initial opacity (0.1), so that pruning shows in 121 steps
    trainer, counts, losses = run_strategy(tmp_path, strategy, 121, pipeline__model__adc__prune_opa=0.09)
    start = len(trainer.pipeline.datamanager.train_dataparser_outputs.metadata["points3D_xyz"])
    # last 20 steps' loss over the first 20's: measured 0.81 (adc), 0.69 (mcmc), 0.66 (none)
    assert sum(losses[-20:]) < 0.9 * sum(losses[:20])
    for name, p in trainer.pipeline.model.gauss_params.items():
        assert torch.isfinite(p).all(), name
    if strategy == "adc":
        assert max(counts) > start  # clones and splits
        assert any(b < a for a, b in zip(counts, counts[1:], strict=False))  # and prunes
    elif strategy == "mcmc":
        expected = start
        for _ in range(5):  # refinements at steps 40, 60, 80, 100, 120: +5% each
            expected = int(1.05 * expected)
        assert counts[-1] == expected
        assert all(b >= a for a, b in zip(counts, counts[1:], strict=False))  # relocates, never removes
    else:
        assert set(counts) == {start}


def test_checkpoints_wait_until_an_opacity_reset_has_healed(tmp_path, monkeypatch):
    """A periodic checkpoint due at or just after ADC's opacity reset (an almost transparent scene)
    is written once the reset has healed; the final one is written whenever the run ends."""
    from tinysplat_ns.core.strategies import adc

    monkeypatch.setattr(adc, "RESET_RECOVERY_STEPS", 10)
    trainer = build_trainer(
        scene_dir(), tmp_path, max_num_iterations=65, steps_per_save=30, save_only_latest_checkpoint=False,
        steps_per_eval_image=0, steps_per_eval_all_images=0,
        pipeline__model__adc__reset_every=30, pipeline__model__adc__refine_stop_iter=62,
    )  # fmt: skip
    trainer.train()  # resets at steps 30 and 60; saves due at 30 and 60, and the last step, 64
    saved = sorted(int(p.stem.split("-")[1]) for p in trainer.checkpoint_dir.glob("step-*.ckpt"))
    assert saved == [40, 64]
    opacities = torch.load(trainer.checkpoint_dir / "step-000000064.ckpt", map_location="cpu")["pipeline"][
        "_model.gauss_params.opacities"
    ]
    assert torch.sigmoid(opacities).max() < 0.05  # the final one as the run ended: mid-reset (capped at 0.01)


@pytest.mark.parametrize("strategy", ["adc", "mcmc", "none"])
def test_budget_holds_for_every_strategy(tmp_path, strategy):
    budget = 6000  # below the scene's 7,840 SfM points
    _, counts, _ = run_strategy(
        tmp_path, strategy, 61, pipeline__model__max_gaussians=budget, pipeline__model__adc__grow_grad2d=0.0
    )
    assert max(counts) == budget  # reached, never passed


def test_resume_mid_densification_restores_count_and_strategy_state(tmp_path):
    trainer, counts, _ = run_strategy(tmp_path / "first", "adc", 50)
    trainer.write_checkpoint(49)
    saved = trainer.pipeline.model
    assert counts[-1] != counts[0]  # densification has happened
    resumed = build_trainer(
        scene_dir(),
        tmp_path / "second",
        load_dir=trainer.checkpoint_dir,
        pipeline__model__strategy="adc",
        **FAST_REFINE,
    )
    model = resumed.pipeline.model
    assert resumed._start_step == 50
    assert len(model.means) == len(saved.means)
    for key in ("grad2d", "count"):
        torch.testing.assert_close(model.strategy_state[key], saved.strategy_state[key])
    train_steps(resumed, range(50, 61))  # and it trains on, through the next refinement
    assert len(model.means) != len(saved.means)


def test_strategy_from_another_package(tmp_path, plugin_env):
    env = plugin_env
    help_text = subprocess.run(
        [str(BIN / "ns-train"), "tinysplat", "--help"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "{adc,mcmc,none,thin-out}" in help_text
    assert "--pipeline.model.thin-out.fraction" in help_text
    result = subprocess.run(
        [
            str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--output-dir", str(tmp_path / "out"),
            "--max-num-iterations", "21", "--vis", "tensorboard", "--pipeline.model.strategy", "thin-out",
            "--pipeline.model.thin-out.every", "10", "--pipeline.model.thin-out.fraction", "0.1",
        ],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = next((tmp_path / "out").rglob("step-000000020.ckpt"))
    means = torch.load(checkpoint, map_location="cpu")["pipeline"]["_model.gauss_params.means"]
    assert len(means) == 7840 - 784 - 705  # 10% dropped at steps 10 and 20
