"""Loss terms: values on hand-checked cases, gradients, composition from `name=weight` items, and
what a user sees through ns-train (per-term logging, bad configs, depth, masks, plugins)."""

import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from tinysplat_ns.core.losses.base import LossInputs
from tinysplat_ns.core.losses.composite import PUBLISHED_3DGS, WeightedLoss, parse_weights
from tinysplat_ns.core.losses.depth import DepthL1
from tinysplat_ns.core.losses.photometric import DSSIM, L1, L2
from tinysplat_ns.core.losses.registry import BUILT_IN, available_terms
from tinysplat_ns.core.losses.regularizers import AnisotropyReg, OpacityReg, ScaleReg


def gaussians(scales, opacities):
    return {
        "scales": torch.log(torch.tensor(scales, dtype=torch.float64)),
        "opacities": torch.logit(torch.tensor(opacities, dtype=torch.float64))[:, None],
    }


def image_inputs(pred, gt, **kwargs):
    return LossInputs(pred=pred, gt=gt, params={}, **kwargs)


# --- values on cases worked out by hand ---


def test_l1_and_l2_by_hand_with_and_without_mask():
    gt = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]]])
    mask = torch.tensor([[[True], [False]]])
    assert L1()(image_inputs(pred, gt)).item() == pytest.approx((0.6 + 1.5) / 6)
    assert L2()(image_inputs(pred, gt)).item() == pytest.approx((0.01 + 0.04 + 0.09 + 0.75) / 6)
    # masked: only the first pixel counts
    assert L1()(image_inputs(pred, gt, mask=mask)).item() == pytest.approx(0.6 / 3)
    assert L2()(image_inputs(pred, gt, mask=mask)).item() == pytest.approx(0.14 / 3)


def test_regularisers_by_hand():
    params = gaussians([[1.0, 2.0, 3.0], [1.0, 1.0, 20.0]], [0.25, 0.75])
    inputs = LossInputs(pred=None, gt=None, params=params)
    assert ScaleReg()(inputs).item() == pytest.approx((6 + 22) / 6)
    assert OpacityReg()(inputs).item() == pytest.approx(0.5)
    # axis ratios 3 and 20: only the second passes 10, by 10
    assert AnisotropyReg(max_ratio=10)(inputs).item() == pytest.approx(10 / 2)
    assert AnisotropyReg(max_ratio=2)(inputs).item() == pytest.approx((1 + 18) / 2)


def test_depth_counts_only_pixels_with_a_depth_inside_the_mask():
    gt_depth = torch.tensor([2.0, 0.0, 4.0, 1.0]).reshape(1, 4, 1)  # 0: unknown
    depth = torch.tensor([3.0, 100.0, 4.5, 7.0]).reshape(1, 4, 1)
    inputs = image_inputs(None, None, depth=depth, gt_depth=gt_depth)
    assert DepthL1()(inputs).item() == pytest.approx((1 + 0.5 + 6) / 3)
    inputs.mask = torch.tensor([True, True, True, False]).reshape(1, 4, 1)
    assert DepthL1()(inputs).item() == pytest.approx((1 + 0.5) / 2)


def photo_pair(dtype=torch.float64):
    """A real photo of the bundled scene and a blurred, shifted, noisy copy of it."""
    from PIL import Image
    from scene import scene_dir

    photo = Image.open(sorted((scene_dir() / "images").glob("*.jpg"))[0]).convert("RGB")
    gt = torch.from_numpy(__import__("numpy").asarray(photo)).to(dtype) / 255
    blurred = torch.nn.functional.avg_pool2d(gt.permute(2, 0, 1)[None], 5, stride=1, padding=2)[0].permute(1, 2, 0)
    generator = torch.Generator().manual_seed(0)
    noisy = torch.roll(blurred, 3, dims=1) + 0.05 * torch.randn(gt.shape, generator=generator, dtype=dtype)
    return noisy.clamp(0, 1), gt


def torchmetrics_dssim(pred, gt) -> float:
    _, ssim_map = structural_similarity_index_measure(
        pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0, return_full_image=True
    )
    # torchmetrics pads by reflection and averages every pixel; pytorch-msssim averages the pixels
    # whose 11x11 window fits in the image: the same map, cropped by 5
    return 1 - ssim_map[..., 5:-5, 5:-5].mean().item()


def test_dssim_agrees_with_torchmetrics_on_a_real_photo():
    pred, gt = photo_pair()
    ours = DSSIM()(image_inputs(pred, gt)).item()
    theirs = torchmetrics_dssim(pred, gt)
    assert 0.2 < ours < 0.9  # a real difference, not a trivial 0
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert DSSIM()(image_inputs(gt, gt)).item() == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize("case", ["default window", "7-pixel window", "masked"])
def test_compiled_dssim_matches_pytorch_msssim_in_float64(case):
    """DSSIM's compiled SSIM (core/kernels/ssim.cpp, its gradient written by hand) on float32 CPU images:
    its value and its gradient against pytorch-msssim's through autograd in float64. Measured:
    value 9.2e-6 off (pytorch-msssim's own float32 path: the same), gradient 4.2e-5 of its largest
    (pytorch-msssim's float32: 5.4e-5)."""
    from tinysplat_ns.core.kernels import ssim as compiled_ssim

    pred, gt = photo_pair()
    window = dict(window_size=7, window_sigma=1.0) if case == "7-pixel window" else {}
    reference_term = DSSIM(**window, implementation="pytorch-msssim")
    compiled_term = DSSIM(**window)  # the default
    mask = None
    if case == "masked":
        mask = torch.zeros(*gt.shape[:2], 1, dtype=torch.bool)
        mask[40:-60, 30:-20] = True
    reference, ours = pred.clone().requires_grad_(), pred.float().requires_grad_()
    expected = reference_term(image_inputs(reference, gt, mask=mask))
    expected.backward()
    assert compiled_ssim.supports(ours, gt.float(), torch.ones(compiled_term.window_size))
    value = compiled_term(image_inputs(ours, gt.float(), mask=mask))
    value.backward()
    with torch.no_grad():  # the value alone (another op, no gradient computed): the same sum
        assert compiled_term(image_inputs(ours, gt.float(), mask=mask)).item() == value.item()
    assert 0.2 < expected.item() < 0.9
    assert value.item() == pytest.approx(expected.item(), abs=3e-5)
    error = (ours.grad.double() - reference.grad).abs().max() / reference.grad.abs().max()
    assert error < 2e-4, f"gradient: relative error {error:.3g}"
    same = gt.float().requires_grad_()
    assert compiled_term(image_inputs(same, gt.float())).item() == pytest.approx(0, abs=1e-6)


def zero_padded_dssim(pred, gt, size=11, sigma=1.5):
    """1 - SSIM as 3DGS computes it: one 2D Gaussian window, conv2d padded with zeros, every pixel."""
    offsets = torch.arange(size, dtype=pred.dtype) - size // 2
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    line = line / line.sum()
    window = (line[:, None] * line[None, :]).expand(3, 1, size, size)
    a, b = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]

    def blur(x):
        return torch.nn.functional.conv2d(x, window, padding=size // 2, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return 1 - ssim_map.mean()


@pytest.mark.parametrize("implementation", ["compiled", "pytorch-msssim"])
def test_dssim_with_zero_borders_is_3dgs_dssim(implementation):
    """`--pipeline.model.loss.dssim.borders zeros`: value and gradient against 3DGS's formula (a 2D
    window, conv2d's zero padding) in float64, through either implementation."""
    pred, gt = photo_pair()
    reference = pred.clone().requires_grad_()
    expected = zero_padded_dssim(reference, gt)
    expected.backward()
    dtype = torch.float32 if implementation == "compiled" else torch.float64
    ours = pred.to(dtype).requires_grad_()
    value = DSSIM(borders="zeros", implementation=implementation)(image_inputs(ours, gt.to(dtype)))
    value.backward()
    valid = DSSIM(implementation=implementation)(image_inputs(pred.to(dtype), gt.to(dtype))).item()
    assert abs(expected.item() - valid) > 1e-3  # the borders count
    assert value.item() == pytest.approx(expected.item(), abs=3e-5)
    error = (ours.grad.double() - reference.grad).abs().max() / reference.grad.abs().max()
    assert error < 2e-4, f"gradient: relative error {error:.3g}"


def test_dssim_of_an_image_narrower_than_its_window_is_pytorch_msssims():
    """A small scene's first steps at a quarter of its size give images narrower than the 11-pixel
    window: the default DSSIM then takes pytorch-msssim's (which smooths along the other axis only)
    instead of the compiled SSIM's error, with the same value and gradient."""
    pred, gt = (image.float()[:8, :40] for image in photo_pair())
    values, grads = [], []
    for term in (DSSIM(), DSSIM(implementation="pytorch-msssim")):
        image = pred.clone().requires_grad_()
        with pytest.warns(UserWarning, match="Skipping Gaussian Smoothing"):
            value = term(image_inputs(image, gt))
        value.backward()
        values.append(value.item())
        grads.append(image.grad)
    assert 0.05 < values[0] == values[1]
    assert torch.equal(grads[0], grads[1])

def test_default_loss_is_the_published_3dgs_loss():
    pred, gt = photo_pair()
    loss = WeightedLoss({name: BUILT_IN[name]() for name in ("l1", "dssim")}, parse_weights(PUBLISHED_3DGS, BUILT_IN))
    values = loss(image_inputs(pred, gt))
    published = 0.8 * (pred - gt).abs().mean().item() + 0.2 * torchmetrics_dssim(pred, gt)
    assert sorted(values) == ["dssim", "l1"]
    assert sum(values.values()).item() == pytest.approx(published, abs=1e-12)


# --- gradients ---


def random_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    return LossInputs(
        pred=rand(12, 12, 3).requires_grad_(),
        gt=rand(12, 12, 3),
        params={
            "scales": (torch.log(rand(5, 3) + 0.05) * 3).requires_grad_(),  # ratios up to ~100: both sides of 10
            "opacities": (rand(5, 1) * 6 - 3).requires_grad_(),
        },
        mask=rand(12, 12, 1) > 0.3,
        depth=(rand(12, 12, 1) + 1).requires_grad_(),
        gt_depth=(rand(12, 12, 1) + 1) * (rand(12, 12, 1) > 0.2),
    )


@pytest.mark.parametrize("name", sorted(BUILT_IN))
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_match_finite_differences(name, masked):
    base = random_inputs()
    if not masked:
        base.mask = None
    term = BUILT_IN[name]()
    leaves = [t for t in (base.pred, base.depth, *base.params.values()) if t.requires_grad]

    def value(pred, depth, scales, opacities):
        inputs = LossInputs(pred, base.gt, {"scales": scales, "opacities": opacities}, base.mask, depth, base.gt_depth)
        return term(inputs)

    assert torch.autograd.gradcheck(value, leaves, eps=1e-6, atol=1e-6)
    grads = torch.autograd.grad(value(*leaves), leaves, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the check was not vacuous


# --- composition ---


def test_zero_weight_contributes_nothing():
    inputs = random_inputs()
    with_zero = WeightedLoss({n: BUILT_IN[n]() for n in ("l1", "scale-reg")}, {"l1": 1.0, "scale-reg": 0.0})
    without = WeightedLoss({"l1": L1()}, {"l1": 1.0})
    values = with_zero(inputs)
    assert list(values) == ["l1"]
    (grad_scales,) = torch.autograd.grad(sum(values.values()), inputs.params["scales"], allow_unused=True)
    assert grad_scales is None
    assert values["l1"].item() == without(inputs)["l1"].item()


def test_each_term_is_weighted_on_its_own():
    inputs = random_inputs()
    weights = {"l1": 0.7, "l2": 0.3, "scale-reg": 0.01, "opacity-reg": 0.02}
    values = WeightedLoss({n: BUILT_IN[n]() for n in weights}, weights)(inputs)
    for name, weight in weights.items():
        assert values[name].item() == pytest.approx(weight * BUILT_IN[name]()(inputs).item())


@pytest.mark.parametrize(
    "items, message",
    [
        (["l1=0.8", "ssim=0.2"], "unknown loss term 'ssim' in 'ssim=0.2'; valid terms: l1, l2, dssim, scale-reg"),
        (["l1=-1"], "'l1=-1': the weight of l1 must be finite and >= 0"),
        (["l1=nan"], "'l1=nan': the weight of l1 must be finite and >= 0"),
        (["l1=abc"], "'l1=abc': the weight of l1 must be a number"),
        (["l1"], "'l1' has no weight; write l1=<weight>"),
        (["l1=1", "l1=2"], "l1 is given twice"),
        (["l1=0"], "all loss weights are 0"),
    ],
)
def test_bad_items_say_what_is_wrong_in_one_line(items, message):
    with pytest.raises(ValueError) as error:
        parse_weights(items, list(BUILT_IN))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_published_default_and_built_ins_are_registered():
    assert PUBLISHED_3DGS == ("l1=0.8", "dssim=0.2")
    assert set(BUILT_IN) <= set(available_terms())
    assert math.isclose(sum(parse_weights(PUBLISHED_3DGS, BUILT_IN).values()), 1.0)
