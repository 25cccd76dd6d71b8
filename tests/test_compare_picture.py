"""The picture tinysplat-compare sends: two renders split at a divider, letterboxed, labelled."""

import numpy as np
import pytest

from tinysplat_ns.compare.picture import DIVIDER_RGB, LETTERBOX_RGB, enlarged, fit_size, label, letterbox, split


def flat(value, height=40, width=60):
    return np.full((height, width, 3), value, np.uint8)


@pytest.mark.parametrize("divider, column", [(0.25, 15), (0.5, 30), (0.9, 54)])
def test_split_takes_left_before_the_divider_and_right_after_with_a_line_between(divider, column):
    out = split(flat(10), flat(200), divider)
    assert (out[:, : column - 1] == 10).all() and (out[:, column + 1 :] == 200).all()
    assert (out[:, column - 1 : column + 1] == DIVIDER_RGB).all()


def test_split_at_the_edges_shows_one_image_only():
    assert (split(flat(10), flat(200), 1.0) == 10).all()
    assert (split(flat(10), flat(200), 0.0) == 200).all()
    with pytest.raises(ValueError, match="differ in size"):
        split(flat(10), flat(200, width=61), 0.5)


def test_a_portrait_photo_fits_a_wide_window_at_full_height():
    assert fit_size(1.5, 1.5, 600) == (400, 600)
    assert fit_size(1.5, 0.75, 600) == (400, 300)
    assert fit_size(0.5, 2.0, 600) == (150, 300)
    boxed = letterbox(flat(255, 400, 300), 400, 600)
    assert (boxed[:, 150:450] == 255).all()
    assert (boxed[:, :150] == LETTERBOX_RGB).all() and (boxed[:, 450:] == LETTERBOX_RGB).all()


def test_small_pictures_are_enlarged_large_ones_kept():
    image = np.random.default_rng(0).integers(0, 255, (48, 36, 3), dtype=np.uint8)
    assert enlarged(image, 960).shape == (960, 720, 3)
    assert enlarged(image, 32) is image


def test_labels_are_drawn_in_their_corner_only():
    image = flat(128, 400, 600)
    left = label(image, ["A: tinysplat", "7,840 Gaussians"], "left")
    right = label(image, ["B: nerfacto"], "right")
    changed_left, changed_right = np.argwhere((left != 128).any(-1)), np.argwhere((right != 128).any(-1))
    assert changed_left[:, 1].max() < 300 and changed_left[:, 0].max() < 100
    assert changed_right[:, 1].min() > 300 and changed_right[:, 0].max() < 100
    assert label(image, [], "left") is image
