"""The protein benchmark's protocol on a tiny subset, and its baselines are proper densities."""

import math

import pytest
import torch

from heatscore.bench.protein import (igso3_mixture_log_density, run_one,
                                     von_mises_kde_log_density)
from heatscore.heat_kernels import igso3_log_density, igso3_sample
from heatscore.manifolds import SO3


@pytest.mark.parametrize("name, baseline", [("proline", "vm-kde"), ("rotations", "igso3-mix")])
def test_protocol_tiny_subset_is_finite(name, baseline):
    methods = ("smoother-auto", "smoother-multiscale", "oism", "oism-nn", baseline)
    rows = run_one(name, seed=0, methods=methods, nn_steps=3, ode_steps=4, max_points=120)
    assert set(rows) == set(methods)
    for method, r in rows.items():
        assert math.isfinite(r["nll"]) and math.isfinite(r["fit_s"]), method
        assert 0.0 <= r["far_share"] <= 1.0
    assert math.isfinite(rows[baseline]["param"])


def test_von_mises_kde_integrates_to_one_on_the_torus():
    """Midpoint rule on a 96² grid: spectrally exact for a smooth periodic density (κ ≤ 50)."""
    centres = torch.rand(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    u = (torch.arange(96, dtype=torch.float64) + 0.5) * 2 * math.pi / 96
    grid = torch.cartesian_prod(u, u)
    logp = von_mises_kde_log_density(grid, centres, [0.5, 5.0, 50.0])
    integral = logp.exp().sum(dim=1) * (2 * math.pi / 96) ** 2
    assert torch.allclose(integral, torch.ones(3, dtype=torch.float64), rtol=1e-10)


def test_igso3_mixture_is_a_density_wrt_volume_and_matches_the_helper():
    m = SO3()
    centres = igso3_sample(4, 0.7, rng=1, mean=torch.eye(3, dtype=torch.float64))
    R, w = m.quadrature(24)
    logp = igso3_mixture_log_density(R, centres, [0.4, 1.0])
    assert torch.allclose((logp.exp() * w).sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=1e-6)
    X = m.random_uniform(5, rng=2)
    mix = igso3_mixture_log_density(X, centres, [0.4])[0]
    haar = torch.stack([igso3_log_density(X, 0.4, mean=c) for c in centres])
    expected = torch.logsumexp(haar, 0) - math.log(4) - math.log(8 * math.pi ** 2)
    assert torch.allclose(mix, expected, rtol=1e-10, atol=1e-12)
