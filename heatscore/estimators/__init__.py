"""Estimators: the diffusion kernel smoother (closed-form scores, no training)."""

from heatscore.estimators._smoother import DiffusionKernelSmoother

__all__ = ["DiffusionKernelSmoother"]
