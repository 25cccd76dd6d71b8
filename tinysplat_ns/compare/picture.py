"""Two renders of one camera shown as one picture: the left one up to a divider, the right one
after it, each labelled, letterboxed to the viewer's window (torch-free: numpy and Pillow)."""

from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIVIDER_RGB = (255, 255, 255)
LETTERBOX_RGB = (24, 24, 28)


def split(left: np.ndarray, right: np.ndarray, divider: float) -> np.ndarray:
    """[H, W, 3] uint8: columns of `left` before `divider` (a fraction of the width), of `right`
    from it on, with a 2-pixel line on the boundary unless it sits on an edge."""
    if left.shape != right.shape:
        raise ValueError(f"the two images differ in size: {left.shape} and {right.shape}")
    width = left.shape[1]
    column = int(round(min(max(divider, 0.0), 1.0) * width))
    out = np.concatenate([left[:, :column], right[:, column:]], axis=1)
    if 0 < column < width:
        out[:, max(column - 1, 0) : column + 1] = DIVIDER_RGB
    return out


def fit_size(aspect: float, image_aspect: float, long_side: int) -> Tuple[int, int]:
    """(height, width) of a window of `aspect` (width / height) whose long side is `long_side`,
    and, inside it, the largest (height, width) of `image_aspect`, as `letterbox` centres it."""
    if aspect >= 1:
        height, width = max(1, round(long_side / aspect)), long_side
    else:
        height, width = long_side, max(1, round(long_side * aspect))
    if image_aspect >= width / height:
        return max(1, round(width / image_aspect)), width
    return height, max(1, round(height * image_aspect))


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` centred on a dark [height, width, 3] canvas (it must fit)."""
    h, w = image.shape[:2]
    if h > height or w > width:
        raise ValueError(f"a {h}x{w} image does not fit in {height}x{width}")
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = LETTERBOX_RGB
    top, left = (height - h) // 2, (width - w) // 2
    canvas[top : top + h, left : left + w] = image
    return canvas


def enlarged(image: np.ndarray, long_side: int) -> np.ndarray:
    """`image` scaled up (bilinear) to `long_side` pixels on its long side, if it is smaller: labels
    are then drawn at a size that reads the same whatever resolution was rendered."""
    height, width = image.shape[:2]
    if max(height, width) >= long_side:
        return image
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def label(image: np.ndarray, lines: Sequence[str], corner: str) -> np.ndarray:
    """`image` with `lines` on a dark box in its top-left ("left") or top-right ("right") corner."""
    if not lines:
        return image
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture, "RGBA")
    font = _font(image.shape[0])
    text = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), text, font=font, spacing=3)
    pad = max(4, font.size // 3)
    text_width, text_height = box[2] - box[0], box[3] - box[1]
    x = pad if corner == "left" else image.shape[1] - text_width - 3 * pad
    draw.rectangle((x, pad, x + text_width + 2 * pad, pad + text_height + 2 * pad), fill=(0, 0, 0, 150))
    draw.multiline_text((x + pad - box[0], 2 * pad - box[1]), text, fill=(255, 255, 255), font=font, spacing=3)
    return np.asarray(picture)


def _font(height: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled font: sized to the picture, as the picture reaches the browser scaled
    return ImageFont.load_default(size=max(10, min(24, height // 40)))
