import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mgc.results.stats import bootstrap_interval, paired_difference, stratified_resamples

N_CLASSES = 4


def labels_and_predictions(accuracy: float, n_per_class: int = 30, seed: int = 0):
    """True labels (balanced) and predictions right with probability `accuracy`."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(N_CLASSES), n_per_class)
    wrong = rng.random(y.size) > accuracy
    pred = np.where(wrong, (y + rng.integers(1, N_CLASSES, y.size)) % N_CLASSES, y)
    return y, pred


def test_resamples_keep_every_genres_count():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    idx = stratified_resamples(y, 500, seed=1)
    assert idx.shape == (500, y.size)
    assert (np.sort(y[idx], axis=1) == np.sort(y)).all()  # same class counts in every draw
    assert len({tuple(r) for r in idx}) > 100  # and they are random


def test_the_interval_is_around_sklearns_score():
    y, pred = labels_and_predictions(0.7)
    for metric, sk in (
        ("accuracy", accuracy_score(y, pred)),
        ("macro_f1", f1_score(y, pred, average="macro", labels=range(N_CLASSES))),
    ):
        ci = bootstrap_interval(y, [pred], metric, N_CLASSES, n_boot=1000)
        assert ci.value == pytest.approx(sk)
        assert ci.low < sk < ci.high
        # 120 tracks at 70 %: the binomial standard error is 4.2 points, a 95 % interval about
        # ±8; stratifying by genre narrows it a little.
        assert 0.08 < ci.high - ci.low < 0.2


def test_known_cases():
    y, _ = labels_and_predictions(1.0)
    perfect = bootstrap_interval(y, [y], "macro_f1", N_CLASSES, n_boot=200)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    # Seeds are averaged inside each resample: two seeds at 60 % and 80 % give a 70 % row.
    _, a = labels_and_predictions(0.6, seed=1)
    _, b = labels_and_predictions(0.8, seed=2)
    row = bootstrap_interval(y, [a, b], "accuracy", N_CLASSES, n_boot=200)
    assert row.value == pytest.approx(((a == y).mean() + (b == y).mean()) / 2)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_interval(y, [y], "auc", N_CLASSES)


def test_paired_difference_sees_a_real_change_and_no_change():
    y, worse = labels_and_predictions(0.6, seed=3)
    _, better = labels_and_predictions(0.85, seed=4)
    same = paired_difference(y, [worse], [worse], "accuracy", N_CLASSES, n_boot=300)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    up = paired_difference(y, [worse], [better], "macro_f1", N_CLASSES, n_boot=1000)
    assert up.low > 0 and up.contains(up.value)
    down = paired_difference(y, [better], [worse], "accuracy", N_CLASSES, n_boot=1000)
    assert down.high < 0 and down.value == pytest.approx((worse == y).mean() - (better == y).mean())


def test_vectorised_scores_equal_sklearns_on_every_resample():
    from mgc.results.stats import _scores

    y, pred = labels_and_predictions(0.5, n_per_class=7, seed=5)
    idx = stratified_resamples(y, 25, seed=2)
    ours = _scores(y[idx], pred[idx], N_CLASSES, "macro_f1")
    theirs = [
        f1_score(y[i], pred[i], average="macro", labels=range(N_CLASSES), zero_division=0)
        for i in idx
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
