"""heatscore: diffusion models on manifolds from the heat kernel.

Subpackages: :mod:`heatscore.manifolds`, :mod:`heatscore.heat_kernels`,
:mod:`heatscore.estimators`, :mod:`heatscore.samplers`, :mod:`heatscore.datasets`.
Conventions (time scale, normalisation, point layout) are fixed in the project's DESIGN.md.
"""

from heatscore._errors import NotFittedError, TruncationWarning

__version__ = "0.1.0"
__all__ = ["TruncationWarning", "NotFittedError", "__version__"]
