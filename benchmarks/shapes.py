"""Procedural colour images of shapes (no downloads): a transfer-learning data set for the sparse
update study (benchmarks/sparse_accuracy.py).

Every image is one shape drawn from a signed distance function (SDF: negative inside) at a random
position, size and rotation, filled or outlined in a random colour over a random background
texture, plus Gaussian noise. A *domain* fixes which shapes are the classes and the drawing style,
so a source domain (pretraining) and a target domain (fine-tuning) differ both in what is to be
told apart and in how it looks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SIZE = 32
Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (px, py) in shape units -> distance


def _polygon(sides: int) -> Sdf:
    """A regular polygon (apothem 0.65): the largest distance past any of its edges."""
    angles = 2 * np.pi * np.arange(sides) / sides + np.pi / 2
    return lambda px, py: np.max([px * np.cos(a) + py * np.sin(a) for a in angles], axis=0) - 0.65


def _star(points: int, depth: float = 0.3) -> Sdf:
    """A rounded star: the radius swings by `depth` `points` times around the centre."""
    return lambda px, py: np.hypot(px, py) - (0.6 + depth * np.cos(points * np.arctan2(py, px)))


def _box(px, py, w: float, h: float):
    return np.maximum(np.abs(px) - w, np.abs(py) - h)


def _circle(px, py, r: float = 0.75):
    return np.hypot(px, py) - r


SHAPES: dict[str, Sdf] = {
    "circle": _circle,
    "triangle": _polygon(3),
    "square": _polygon(4),
    "pentagon": _polygon(5),
    "hexagon": _polygon(6),
    "ring": lambda px, py: np.abs(np.hypot(px, py) - 0.55) - 0.2,
    "plus": lambda px, py: np.minimum(_box(px, py, 0.22, 0.8), _box(px, py, 0.8, 0.22)),
    "half_disk": lambda px, py: np.maximum(_circle(px, py, 0.8), -py - 0.1),
    "ellipse": lambda px, py: (np.hypot(px, py * 2.2) - 0.8) / 2.2,
    "star5": _star(5),
    # more shapes, for other domains
    "star3": _star(3),
    "star4": _star(4),
    "star6": _star(6, 0.2),
    "crescent": lambda px, py: np.maximum(_circle(px, py), -_circle(px - 0.4, py, 0.6)),
    "L": lambda px, py: np.minimum(_box(px + 0.45, py, 0.22, 0.75), _box(px, py + 0.53, 0.67, 0.22)),
    "T": lambda px, py: np.minimum(_box(px, py - 0.53, 0.75, 0.22), _box(px, py + 0.1, 0.22, 0.6)),
    "square_ring": lambda px, py: np.maximum(_box(px, py, 0.7, 0.7), -_box(px, py, 0.38, 0.38)),
    "two_dots": lambda px, py: np.minimum(_circle(px - 0.42, py, 0.32), _circle(px + 0.42, py, 0.32)),
    "bar": lambda px, py: _box(px, py, 0.85, 0.2),
    "arrow": lambda px, py: np.minimum(_box(px + 0.3, py, 0.45, 0.15),
                                       np.maximum(np.abs(py) * 0.8 + px - 0.75, -px + 0.1)),
}


@dataclass(frozen=True)
class Domain:
    classes: tuple[str, ...]
    outline: float  # probability of drawing the outline (a stroke) instead of the filled shape
    backgrounds: tuple[str, ...]  # textures to draw from: plain, gradient, stripes, checker
    palette: tuple[float, float]  # hue range of the shapes (0..1)
    noise: float
    contrast: float = 0.3  # amplitude of the stripes and checker textures
    by_stroke: bool = False  # classes are shape x (filled, outlined): 2 per shape, `outline` unused

    @property
    def n_classes(self) -> int:
        return len(self.classes) * (2 if self.by_stroke else 1)


# Pretraining sees every shape, filled and outlined, as its own class (40 classes: features that
# know shapes and strokes, as ImageNet's know objects) in any colour over quiet backgrounds.
SOURCE = Domain(tuple(SHAPES), outline=0.5, backgrounds=("plain", "gradient", "stripes"), palette=(0.0, 1.0),
                noise=0.05, contrast=0.15, by_stroke=True)
# The device's own data: ten of those classes (five shapes, filled or outlined) as its sensor sees
# them: cyan-to-magenta objects, three times the noise, and a strong checkerboard background that
# pretraining never saw. Features must adapt, not only the classifier.
TARGET = Domain(("triangle", "square", "ring", "plus", "star5"), outline=0.5, backgrounds=("plain", "checker"),
                palette=(0.5, 0.9), noise=0.15, contrast=0.3, by_stroke=True)


def _hue(h: np.ndarray) -> np.ndarray:
    """Saturated RGB of hues (N,) -> (N, 3)."""
    return np.clip(np.abs((h[:, None] * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)


def _background(kind: str, n: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator,
                contrast: float) -> np.ndarray:
    """(n, SIZE, SIZE) grey levels of one texture kind with random phase/direction."""
    angle = rng.uniform(0, np.pi, (n, 1, 1))
    along = u * np.cos(angle) + v * np.sin(angle)
    if kind == "plain":
        return np.broadcast_to(rng.uniform(0.1, 0.9, (n, 1, 1)), (n, SIZE, SIZE))
    if kind == "gradient":
        return 0.5 + 0.35 * along
    if kind == "stripes":
        return 0.5 + contrast * np.sign(np.sin(along * rng.uniform(6, 14, (n, 1, 1)) + rng.uniform(0, 6, (n, 1, 1))))
    if kind == "checker":
        f = rng.uniform(4, 9, (n, 1, 1))
        return 0.5 + contrast * np.sign(np.sin(u * f) * np.sin(v * f))
    raise ValueError(kind)


def make(domain: Domain, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 3, SIZE, SIZE) float32 of the domain's classes, balanced, labels int64."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % domain.n_classes
    rng.shuffle(y)
    shape = y // 2 if domain.by_stroke else y
    grid = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    v, u = np.meshgrid(grid, grid, indexing="ij")
    centre = rng.uniform(-0.25, 0.25, (n, 2, 1, 1))
    scale = rng.uniform(0.45, 0.7, (n, 1, 1))
    turn = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    du, dv = u - centre[:, 0], v - centre[:, 1]
    px = (du * np.cos(turn) + dv * np.sin(turn)) / scale
    py = (-du * np.sin(turn) + dv * np.cos(turn)) / scale
    sdf = np.empty((n, SIZE, SIZE))
    for k, name in enumerate(domain.classes):
        sdf[shape == k] = SHAPES[name](px[shape == k], py[shape == k])
    outline = y % 2 == 1 if domain.by_stroke else rng.random(n) < domain.outline
    sdf[outline] = np.abs(sdf[outline]) - 0.12
    edge = 1 / (1 + np.exp(np.clip(sdf * scale * SIZE, -30, 30)))  # antialiased coverage, ~1 px ramp
    kinds = rng.choice(len(domain.backgrounds), n)
    grey = np.empty((n, SIZE, SIZE))
    for k, kind in enumerate(domain.backgrounds):
        grey[kinds == k] = _background(kind, int(np.sum(kinds == k)), u, v, rng, domain.contrast)
    background = grey[:, None] * rng.uniform(0.6, 1.0, (n, 3, 1, 1))
    colour = _hue(rng.uniform(*domain.palette, n)) * rng.uniform(0.6, 1.0, (n, 1))
    x = background * (1 - edge[:, None]) + colour[:, :, None, None] * edge[:, None]
    x = (x - 0.5) / 0.25 + rng.normal(0, domain.noise / 0.25, x.shape)
    return x.astype(np.float32), y.astype(np.int64)
