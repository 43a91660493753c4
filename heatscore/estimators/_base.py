"""scikit-learn's estimator protocol for heatscore estimators.

They are scikit-learn ``BaseEstimator``s (``clone``, ``GridSearchCV``, ``cross_val_score`` and
``Pipeline`` work): ``__init__`` stores its arguments and nothing else; ``get_params`` /
``set_params`` read and write them; ``fit`` starts from a clean state (``_reset``) and returns
``self``; fitted attributes end in ``_``; methods called before ``fit`` raise ``NotFittedError``
(scikit-learn's, subclassed).
"""

import sklearn.base

from heatscore._errors import NotFittedError


class BaseEstimator(sklearn.base.BaseEstimator):
    """Fitted-state handling shared by every heatscore estimator.

    ``_private_state``: the names of the private attributes ``fit`` sets (caches, routes), which
    ``_reset`` forgets with the fitted attributes (names ending in ``_``).
    """

    _private_state = ()

    def _reset(self):
        """Forget every fitted attribute and private cache: only the parameters (and what
        scikit-learn itself attaches) remain."""
        params = set(self._get_param_names())
        for name in [k for k in vars(self) if k not in params
                     and (k.endswith("_") and not k.startswith("__") or k in self._private_state)]:
            delattr(self, name)

    def _check_fitted(self, attribute):
        if not hasattr(self, attribute):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    def _set_n_features(self, X):
        """``n_features_in_`` for flat (n, k) points, as scikit-learn's tools read it."""
        if X.ndim == 2:
            self.n_features_in_ = int(X.shape[1])
