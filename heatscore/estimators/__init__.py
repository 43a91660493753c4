"""Estimators: the diffusion kernel smoother and closed-form OISM (no training), neural score models."""

from heatscore.estimators._oism import OperatorScoreMatching
from heatscore.estimators._smoother import DiffusionKernelSmoother

__all__ = ["DiffusionKernelSmoother", "OperatorScoreMatching"]
from heatscore.estimators._neural import NeuralScoreModel, ScoreNetwork, dsm_per_example

__all__ += ["NeuralScoreModel", "ScoreNetwork", "dsm_per_example"]


def __getattr__(name):
    """``read_dask_points`` imports dask on first use (the Dask extra stays optional)."""
    if name == "read_dask_points":
        from heatscore.estimators._dask import read_dask_points
        return read_dask_points
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
