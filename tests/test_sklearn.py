"""heatscore's estimators inside scikit-learn: clone, GridSearchCV, cross_val_score, Pipeline,
check_is_fitted, clean refits, and scikit-learn's own ``check_estimator`` where it applies."""

import warnings

import numpy as np
import pytest
import sklearn.base
import torch
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted

from conftest import cached_mesh
from heatscore.datasets import latlon_to_unit, load_earth, load_earth_latlon
from heatscore.estimators import DiffusionKernelSmoother, NeuralScoreModel, OperatorScoreMatching
from heatscore.heat_kernels import sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, ProductManifold, Sphere, Torus

TINY = {"hidden": (8,), "n_frequencies": 2, "n_steps": 2, "batch_size": 16}


def _clustered(m, n, seed, t=0.02):
    centres = m.sample_stationary(4, rng=seed)
    return sample_heat_kernel(m, centres.repeat((n // 4,) + (1,) * len(m.point_shape)), t, rng=seed + 1)


ESTIMATORS = {
    "smoother": lambda m: DiffusionKernelSmoother(m, time=0.05),
    "oism": lambda m: OperatorScoreMatching(m, n_levels=3),
    "neural": lambda m: NeuralScoreModel(m, rng=0, **TINY),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_clone_params_and_not_fitted(name):
    est = ESTIMATORS[name](Sphere(2))
    twin = sklearn.base.clone(est)
    assert type(twin) is type(est) and twin.get_params() == est.get_params()
    assert twin.manifold is est.manifold                      # manifolds are immutable values
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(est)
    X = _clustered(Sphere(2), 40, 0)
    est.fit(X)
    check_is_fitted(est)
    assert est.n_features_in_ == 3
    assert est.set_params(**twin.get_params()) is est


@pytest.mark.parametrize("name", ["smoother", "oism"])
def test_y_is_ignored(name):
    m = Sphere(2)
    X = _clustered(m, 40, 1)
    Q = m.random_uniform(5, rng=2)
    a = ESTIMATORS[name](m).fit(X).grad_log_density(Q, 0.1)
    b = ESTIMATORS[name](m).fit(X, np.arange(40.0)).grad_log_density(Q, 0.1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    w = torch.linspace(1.0, 2.0, 40, dtype=torch.float64)
    c = ESTIMATORS[name](m).fit(X, None, w).grad_log_density(Q, 0.1)      # (X, y, sample_weight)
    assert not torch.equal(a, c)


def test_refit_starts_clean():
    m = Sphere(2)
    X = _clustered(m, 80, 3)
    est = DiffusionKernelSmoother(m, time="multiscale").fit(X)
    assert hasattr(est, "grid_") and len(est.times_) >= 1
    est.set_params(time=0.05).fit(X)
    assert not hasattr(est, "grid_") and not hasattr(est, "loo_log_likelihood_")
    assert est.time_ == 0.05
    est.set_params(time="multiscale").fit(X)
    if len(est.times_) > 1:
        assert not hasattr(est, "time_")
    mesh = cached_mesh("ico2")
    est = DiffusionKernelSmoother(mesh, time=0.01).fit(mesh.random_uniform(30, rng=4))
    assert hasattr(est, "_mesh_density")
    est.set_params(manifold=m).fit(X)
    assert not hasattr(est, "_mesh_density")
    assert np.isfinite(est.score(X))


def test_grid_search_and_cross_validation():
    """GridSearchCV over the diffusion time picks the held-out-likelihood optimum; every fold's
    model is a fresh clone fitted on its own training part."""
    X = load_earth("volcano").numpy()
    rng = np.random.default_rng(0)
    X = X[rng.permutation(X.shape[0])[:400]]
    search = GridSearchCV(DiffusionKernelSmoother(Sphere(2)), {"time": [1e-4, 1e-3, 1e-2, 1e-1]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_["time"] == [1e-4, 1e-3, 1e-2, 1e-1][int(np.argmax(scores))]
    assert np.all(np.isfinite(scores))
    assert search.best_estimator_.time_ == search.best_params_["time"]
    cv = cross_val_score(DiffusionKernelSmoother(Sphere(2), time=1e-3), X, cv=3)
    assert cv.shape == (3,) and np.all(np.isfinite(cv))


def test_cross_validation_on_rotations_and_products():
    """Points that are not flat rows (SO(3) matrices) and product rows go through sklearn's
    splitters as they are."""
    R = _clustered(SO3(), 60, 5)
    assert np.all(np.isfinite(cross_val_score(DiffusionKernelSmoother(SO3(), time=0.05), R, cv=3)))
    P = ProductManifold(Torus(2), Sphere(2))
    Y = _clustered(P, 60, 6, t=0.05)
    assert np.all(np.isfinite(cross_val_score(DiffusionKernelSmoother(P, time=0.05), Y, cv=3)))


def test_pipeline_with_a_transformer():
    """lat/lon degrees -> unit vectors -> the smoother: Pipeline's score is the model's."""
    latlon = np.asarray(load_earth_latlon("volcano"))[:300]
    pipe = Pipeline([("unit", FunctionTransformer(lambda a: latlon_to_unit(a).numpy())),
                     ("kde", DiffusionKernelSmoother(Sphere(2), time=1e-3))]).fit(latlon)
    direct = DiffusionKernelSmoother(Sphere(2), time=1e-3).fit(latlon_to_unit(latlon))
    assert pipe.score(latlon) == pytest.approx(direct.score(latlon_to_unit(latlon)), rel=1e-12)


def test_neural_clone_refits_its_residual_base():
    """A clone's residual base is unfitted: fit fits it on the same data (``residual_``)."""
    m = Euclidean(2)
    X = torch.randn(50, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    base = OperatorScoreMatching(m, n_levels=3).fit(X)
    est = NeuralScoreModel(m, residual=base, rng=0, **TINY).fit(X)
    assert est.residual_ is base
    twin = sklearn.base.clone(est).fit(X)
    assert twin.residual_ is not base
    check_is_fitted(twin.residual_)
    torch.testing.assert_close(twin.residual_.coef_, base.coef_)


def test_manifold_equality():
    assert Sphere(2) == Sphere(2) and hash(Sphere(2)) == hash(Sphere(2))
    assert DiffusionKernelSmoother(Sphere(2)).get_params() == DiffusionKernelSmoother(Sphere(2)).get_params()


#: scikit-learn checks that do not apply, with the reason (the rest must pass). Every heatscore
#: estimator is built on a manifold whose point shape is fixed (here Euclidean(3): rows of 3),
#: so checks that feed another number of features, or reshape the data, cannot pass.
NOT_APPLICABLE = {
    "check_estimators_dtypes": "feeds 5 features to a 3-dimensional manifold",
    "check_n_features_in_after_fitting": "feeds 4 features (the point shape is the manifold's)",
    "check_estimators_overwrite_params": "feeds 2 features",
    "check_estimators_fit_returns_self": "feeds 2 features",
    "check_readonly_memmap_input": "feeds 2 features",
    "check_sample_weights_pandas_series": "feeds 2 features",
    "check_sample_weights_not_an_array": "feeds 2 features",
    "check_sample_weights_shape": "feeds 2 features",
    "check_sample_weights_not_overwritten": "feeds 2 features",
    "check_sample_weight_equivalence_on_dense_data": "feeds 30 features",
    "check_all_zero_sample_weights_error": "feeds 2 features before the weights are read",
    "check_positive_only_tag_during_fit": "feeds 2 features",
    "check_fit_idempotent": "feeds 2 features",
    "check_fit_check_is_fitted": "feeds 2 features",
    "check_n_features_in": "feeds 2 features",
    "check_fit2d_1feature": "feeds 1 feature; the error names the manifold's point shape instead",
    "check_fit2d_1sample": "a fixed time fits one point; 'auto' says it needs 2 points, not '1 sample'",
    "check_estimators_empty_data_messages": "0 features: the error names the point shape instead",
    "check_complex_data": "DESIGN: a wrong dtype is a TypeError (scikit-learn expects ValueError)",
    "check_dtype_object": "DESIGN: a non-numeric array is a TypeError (scikit-learn expects ValueError)",
    "check_array_api_input": "skipped by scikit-learn unless SCIPY_ARRAY_API is set",
}


def test_scikit_learn_check_estimator():
    est = DiffusionKernelSmoother(Euclidean(3), time=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] != "passed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed <= set(NOT_APPLICABLE), failed - set(NOT_APPLICABLE)
    assert {"check_no_attributes_set_in_init", "check_estimators_unfitted", "check_get_params_invariance",
            "check_set_params", "check_estimator_cloneable", "check_pipeline_consistency",
            "check_estimators_nan_inf", "check_estimator_sparse_array"} <= passed
