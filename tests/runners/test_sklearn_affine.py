from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, PolynomialFeatures, StandardScaler

from demo import data
from runners import sklearn_affine
from runners.loader import load_runner
from runners.sklearn_affine import AffineClassifier, compile_classifier, fold


@pytest.fixture(scope="module")
def digits():
    return data.digits()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_stored_pipelines_run_folded_with_the_estimators_answers(model_store, digits, version):
    runner = load_runner(f"digits-sklearn:{version}", "cpu")
    assert runner.folded is not None
    x = digits.x_test
    np.testing.assert_allclose(runner.run(x)["probabilities"], runner.estimator.predict_proba(x), rtol=0, atol=1e-5)
    labels = runner.run(x)["label"]
    np.testing.assert_array_equal(labels, runner.estimator.predict(x))
    assert float((labels == digits.y_test).mean()) == pytest.approx(runner.metadata["accuracy"], abs=1e-4)  # stored rounded


@pytest.mark.parametrize(
    "steps",
    [
        [StandardScaler(), PCA(n_components=20, whiten=True)],
        [StandardScaler(with_mean=False), TruncatedSVD(n_components=12, random_state=0)],
        [MaxAbsScaler(), "passthrough"],
        [MinMaxScaler(feature_range=(-1, 1))],
        [],
    ],
    ids=["whitened-pca", "svd", "max-abs", "min-max", "bare"],
)
@pytest.mark.parametrize("classes", [10, 2])
def test_affine_pipelines_fold_exactly(digits, steps, classes):
    keep = digits.y_train < classes
    pipe = make_pipeline(*steps, LogisticRegression(max_iter=3000)).fit(digits.x_train[keep], digits.y_train[keep])
    folded = fold(pipe)
    assert folded is not None
    x = digits.x_test
    np.testing.assert_allclose(folded.predict_proba(x), pipe.predict_proba(x), rtol=0, atol=1e-5)
    far = x.astype(np.float64) * 7.5 - 40  # far outside the training range; float64 so both sides round alike
    np.testing.assert_allclose(folded.predict_proba(far), pipe.predict_proba(far), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "estimator",
    [
        make_pipeline(MinMaxScaler(clip=True), LogisticRegression(max_iter=500)),
        make_pipeline(PolynomialFeatures(2), LogisticRegression(max_iter=50)),
        RandomForestClassifier(n_estimators=3, random_state=0),
    ],
    ids=["clipping", "polynomial", "forest"],
)
def test_other_estimators_are_not_folded(digits, estimator):
    estimator.fit(digits.x_train[:300], digits.y_train[:300])
    assert fold(estimator) is None
    assert compile_classifier(estimator, digits.x_test[:65]) is None


def test_a_fold_that_disagrees_with_the_estimator_is_not_used(digits, monkeypatch):
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(digits.x_train, digits.y_train)
    good = fold(pipe)
    assert compile_classifier(pipe, digits.x_test[:65]) is not None
    wrong = AffineClassifier(good.weight, good.bias + np.eye(10)[3] * 1e-3, binary=False)
    monkeypatch.setattr(sklearn_affine, "fold", lambda estimator: wrong)
    assert compile_classifier(pipe, digits.x_test[:65]) is None
