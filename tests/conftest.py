"""Shared test settings: tolerances by dtype live here and nowhere else.

Any looser tolerance in a test file is a named constant with its reason.
"""

import functools
import os

import pytest
import torch

#: Round-off tolerances by dtype: (rtol, atol).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-5)}

#: Statistical checks use this many standard errors. For a Gaussian statistic the two-sided
#: chance of a false failure is about 5.7e-7 per check.
N_SIGMA = 5.0

#: Path of the shared data folder bundled with the package.
DATA_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "heatscore", "datasets", "data")


def assert_close(actual, expected, rtol=None, atol=None, dtype=torch.float64):
    """torch.testing.assert_close with the project's tolerances for ``dtype`` by default."""
    r, a = TOL[dtype]
    torch.testing.assert_close(torch.as_tensor(actual, dtype=dtype), torch.as_tensor(expected, dtype=dtype),
                               rtol=r if rtol is None else rtol, atol=a if atol is None else atol)


def coordinate_gradient(f, x, h):
    """(n, K, d) fourth-order central differences of f: (n, d) -> (n, K) along each coordinate,
    (−f(x + 2h e_i) + 8f(x + h e_i) − 8f(x − h e_i) + f(x − 2h e_i))/(12h)."""
    columns = []
    for i in range(x.shape[1]):
        e = torch.zeros(x.shape[1], dtype=x.dtype)
        e[i] = h
        columns.append((-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h))
    return torch.stack(columns, dim=-1)


@pytest.fixture
def gen():
    """A seeded torch.Generator (tests never use global random state)."""
    return torch.Generator().manual_seed(1234)


@functools.lru_cache(maxsize=None)
def cached_mesh(name):
    """A test mesh shared across files: "spot" (bundled) or "ico<k>" (icosphere, k subdivisions)."""
    from heatscore.datasets import spot_path
    from heatscore.manifolds import TriangleMesh
    from heatscore.manifolds._mesh_geometry import icosphere

    if name == "spot":
        return TriangleMesh.from_file(spot_path())
    return TriangleMesh(*icosphere(int(name[3:])))
