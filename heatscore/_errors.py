"""Warnings and errors shared by every heatscore module."""


class TruncationWarning(UserWarning):
    """A numerical condition (a truncated series, too few eigenpairs for a small time) was met.

    heatscore warns with this class and falls back to a correct route: never a NaN, never a
    silent clamp.
    """


class NotFittedError(ValueError, AttributeError):
    """An estimator method was called before ``fit`` (scikit-learn's convention)."""
