"""Warnings and errors shared by every heatscore module."""

import sklearn.exceptions


class TruncationWarning(UserWarning):
    """A numerical condition (a truncated series, too few eigenpairs for a small time) was met.

    heatscore warns with this class and falls back to a correct route: never a NaN, never a
    silent clamp.
    """


class DegenerateDataWarning(UserWarning):
    """The data cannot support what was asked of them (e.g. every point identical): the fit goes
    on, with what it did stated."""


class NotFittedError(sklearn.exceptions.NotFittedError):
    """An estimator method was called before ``fit`` (scikit-learn's error, so its
    ``check_is_fitted`` and handlers catch it)."""
