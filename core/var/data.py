"""Procedural class-conditional images for the small VAR: 32×32 RGB, 10 distinct shape/texture classes.

Every sample draws its own position, size, foreground colour (one of the 7 bright entries of an 8-colour palette,
on the near-black background) and a little Gaussian noise from the numpy ``Generator`` it is given, so an image is a
pure function of (class, generator state). Pure numpy, no PIL. The colours are deliberate, found by training runs
(the README gives the numbers): with continuous random colours the VARs spent their capacity on shades; with two
random palette colours per image they still mixed several colours into one sample; with a fixed dark background the
coarse scales carry the silhouette (brightness), and samples became recognisable.
"""

from __future__ import annotations

import numpy as np
import torch

SIDE = 32  # image height = width in pixels
CLASS_NAMES: tuple[str, ...] = ("circle", "ring", "square", "triangle", "h-stripes", "v-stripes", "checkerboard",
                                "cross", "diagonal", "two-dots")
NOISE_STD = 0.02  # per-pixel Gaussian noise, in [0, 1] colour units
PALETTE = np.array([[0.05, 0.05, 0.10],  # near-black
                    [0.95, 0.95, 0.90],  # off-white
                    [0.90, 0.15, 0.15],  # red
                    [0.15, 0.75, 0.20],  # green
                    [0.15, 0.30, 0.90],  # blue
                    [0.95, 0.85, 0.10],  # yellow
                    [0.70, 0.20, 0.80],  # purple
                    [0.10, 0.80, 0.85]])  # cyan


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground colours (3,) in [0, 1]: the near-black background and one of the 7 bright entries."""
    return PALETTE[0], PALETTE[int(rng.integers(1, len(PALETTE)))]


def _mask(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean foreground mask (SIDE, SIDE) of one random instance of the class."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) + 0.5  # pixel centres

    def centre(margin: float) -> tuple[float, float]:
        return rng.uniform(margin, SIDE - margin), rng.uniform(margin, SIDE - margin)

    if class_id == 0:  # filled circle
        r = rng.uniform(7.0, 12.0)
        cy, cx = centre(r + 1)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if class_id == 1:  # ring
        r_out = rng.uniform(9.0, 14.0)
        width = rng.uniform(3.0, 5.0)
        cy, cx = centre(r_out + 1)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return (d <= r_out) & (d >= r_out - width)
    if class_id == 2:  # filled axis-aligned square
        h = rng.uniform(6.0, 11.0)
        cy, cx = centre(h + 1)
        return (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    if class_id == 3:  # filled upright triangle (apex on top)
        h = rng.uniform(8.0, 13.0)
        cy, cx = centre(h + 1)
        top, bottom = cy - h, cy + h
        frac = (y - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (frac >= 0) & (frac <= 1) & (np.abs(x - cx) <= frac * h)
    if class_id in (4, 5):  # horizontal / vertical stripes over the whole image
        period = rng.uniform(10.0, 16.0)
        coord = y if class_id == 4 else x
        return np.mod(coord + rng.uniform(0, period), period) < period / 2
    if class_id == 6:  # checkerboard
        cell = rng.uniform(7.0, 10.0)
        oy, ox = rng.uniform(0, 2 * cell, 2)
        return (np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2 == 0
    if class_id == 7:  # plus / cross
        arm = rng.uniform(9.0, 14.0)
        t = rng.uniform(2.5, 4.0)
        cy, cx = centre(arm + 1)
        return ((np.abs(x - cx) <= t) & (np.abs(y - cy) <= arm)) | ((np.abs(y - cy) <= t) & (np.abs(x - cx) <= arm))
    if class_id == 8:  # thick diagonal line (↘ or ↗) across the image
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        t = rng.uniform(2.5, 4.5)
        cy, cx = centre(10.0)
        return np.abs((x - cx) - sign * (y - cy)) / np.sqrt(2.0) <= t
    if class_id == 9:  # two small dots
        r = rng.uniform(4.0, 6.0)
        while True:  # redraw both: some first centres (mid-image) leave no room for the second dot
            cy1, cx1 = centre(r + 1)
            cy2, cx2 = centre(r + 1)
            if np.hypot(cy2 - cy1, cx2 - cx1) >= 2 * r + 4:
                break
        return ((x - cx1) ** 2 + (y - cy1) ** 2 <= r * r) | ((x - cx2) ** 2 + (y - cy2) ** 2 <= r * r)
    raise ValueError(f"class_id must be in 0..{len(CLASS_NAMES) - 1}, got {class_id}")


def draw(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """One random image of class ``class_id``: (32, 32, 3) uint8. Deterministic given the generator's state."""
    mask = _mask(int(class_id), rng)
    bg, fg = _colours(rng)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0.0, NOISE_STD, (SIDE, SIDE, 3))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def make_dataset(n_per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` images of every class: x (N, 3, 32, 32) float in [-1, 1], y (N,) long, N = 10·n_per_class.

    Classes are interleaved (sample i of class c sits at i·10 + c) and each class has its own generator seeded by
    (seed, c), so a dataset's first samples of a class do not depend on ``n_per_class``."""
    n_cls = len(CLASS_NAMES)
    imgs = np.empty((n_per_class * n_cls, SIDE, SIDE, 3), np.uint8)
    for c in range(n_cls):
        rng = np.random.default_rng([seed, c])
        for i in range(n_per_class):
            imgs[i * n_cls + c] = draw(c, rng)
    x_B3PP = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    y_B = torch.arange(n_per_class * n_cls, dtype=torch.long) % n_cls
    return x_B3PP, y_B


def to_uint8(img_B3PP: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [-1, 1], (B, 3, P, P) (or one (3, P, P)) → (B, P, P, 3) uint8 for display."""
    if isinstance(img_B3PP, torch.Tensor):
        img_B3PP = img_B3PP.detach().float().cpu().numpy()
    arr = np.asarray(img_B3PP, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    return np.clip(np.rint((arr.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)
