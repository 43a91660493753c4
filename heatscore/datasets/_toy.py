"""Two-dimensional toy densities of the score-based modelling literature (FFJORD's recipes).

``toy_2d(name, n, rng)`` returns (n, 2) float64 points, roughly inside [−4, 4]²:

- ``"8gaussians"``: N(c_k, 0.5²I)/√2 with the eight centres c_k = 4·(cos kπ/4, sin kπ/4);
- ``"2spirals"``: two interleaved arms r = s·(−cos s, sin s)/3, s = √u · 3π (u uniform), mirrored,
  with U(0, 0.5)/3 jitter and N(0, 0.1²) noise;
- ``"pinwheel"``: five arms; radial N(1, 0.3²), tangential N(0, 0.1²), rotated by
  2πk/5 + 0.25·e^{radial}, scaled by 2.

``to_torus(X, half_width=TOY_HALF_WIDTH)`` maps the box [−h, h)² affinely onto the angle square
[0, 2π)² (log-densities on T² differ by 2·log(π/h) from those in the box).
"""

from __future__ import annotations

import math

import torch

from heatscore._typing import ArrayLike, Rng
from heatscore._validation import as_generator, check_positive_int, rand, randn

TOY_DATASETS = ("8gaussians", "2spirals", "pinwheel")
#: Half-width of the box mapped onto T²: all three toys lie inside it with overwhelming probability.
TOY_HALF_WIDTH = 4.5


def toy_2d(name: str, n: int, rng: Rng = None) -> torch.Tensor:
    """(n, 2) float64 draws of the toy density ``name`` (module docstring)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"name must be one of {TOY_DATASETS}, found {name!r}")
    n = check_positive_int(n, "n")
    gen = as_generator(rng)
    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=gen).to(torch.float64)
        centres = 4 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], dim=1)
        return (centres + 0.5 * randn(gen, (n, 2))) / math.sqrt(2)
    if name == "2spirals":
        half = (n + 1) // 2
        s = torch.sqrt(rand(gen, (half,))) * 3 * math.pi
        arm = torch.stack([-torch.cos(s) * s, torch.sin(s) * s], dim=1) + 0.5 * rand(gen, (half, 2))
        both = torch.cat([arm, -arm])[:n] / 3
        return both + 0.1 * randn(gen, (n, 2))
    labels = torch.randint(0, 5, (n,), generator=gen).to(torch.float64)
    feats = randn(gen, (n, 2)) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    feats[:, 0] += 1.0
    angles = 2 * math.pi * labels / 5 + 0.25 * torch.exp(feats[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)   # (n, 2, 2)
    return 2 * torch.einsum("nij,nj->ni", rot, feats)


def to_torus(X: ArrayLike, half_width: float = TOY_HALF_WIDTH) -> torch.Tensor:
    """Angles (n, 2) in [0, 2π): the box [−h, h)² mapped affinely, θ = (x + h)·π/h mod 2π."""
    X = torch.as_tensor(X, dtype=torch.float64)
    return torch.remainder((X + half_width) * (math.pi / half_width), 2 * math.pi)
