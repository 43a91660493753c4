"""The public API is type-annotated: every parameter and return of the functions and public
methods each subpackage exports (its ``__all__``) has a hint, and the hints resolve."""

import importlib
import inspect
import typing

import numpy as np
import pytest
import torch

PACKAGES = ["heatscore.manifolds", "heatscore.heat_kernels", "heatscore.estimators",
            "heatscore.samplers", "heatscore.datasets", "heatscore.plotting", "heatscore.testing"]
#: Parameters never annotated by convention.
EXEMPT = {"self", "cls"}


def _public_callables():
    for name in PACKAGES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isfunction(obj):
                yield f"{name}.{attr}", obj
            elif inspect.isclass(obj) and obj.__module__.startswith("heatscore"):
                for meth_name, meth in vars(obj).items():
                    if isinstance(meth, (classmethod, staticmethod)):
                        meth = meth.__func__
                    if inspect.isfunction(meth) and (meth_name == "__init__"
                                                      or not meth_name.startswith("_")):
                        yield f"{name}.{attr}.{meth_name}", meth


CALLABLES = sorted(dict(_public_callables()).items())


def test_the_public_api_is_listed():
    names = {n for n, _ in CALLABLES}
    for expected in ["heatscore.estimators.DiffusionKernelSmoother.fit",
                     "heatscore.manifolds.Manifold.exp", "heatscore.samplers.reverse_sde",
                     "heatscore.heat_kernels.igso3_score", "heatscore.plotting.plot_density"]:
        assert expected in names


@pytest.mark.parametrize("name,func", CALLABLES, ids=[n for n, _ in CALLABLES])
def test_annotated(name, func):
    sig = inspect.signature(func)
    missing = [p.name for p in sig.parameters.values()
               if p.name not in EXEMPT and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and p.annotation is inspect.Parameter.empty]
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return hint"
    typing.get_type_hints(func, globalns=_namespace(func))


def _namespace(func):
    """The names an annotation may use: its module's, the public classes', and the optional
    geomstats types that modules import only under ``typing.TYPE_CHECKING``."""
    namespace = {"np": np, "torch": torch}
    for name in PACKAGES:
        namespace.update(vars(importlib.import_module(name)))
    namespace.update(vars(importlib.import_module(func.__module__)))
    namespace.update(_geomstats_types())
    return namespace


def _geomstats_types():
    from geomstats.geometry.euclidean import Euclidean
    from geomstats.geometry.hypersphere import Hypersphere
    from geomstats.geometry.manifold import Manifold
    from geomstats.geometry.product_manifold import ProductManifold
    from geomstats.geometry.special_orthogonal import SpecialOrthogonal

    return {"GeomstatsEuclidean": Euclidean, "Hypersphere": Hypersphere,
            "GeomstatsManifold": Manifold, "GeomstatsProduct": ProductManifold,
            "SpecialOrthogonal": SpecialOrthogonal}
