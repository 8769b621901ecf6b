"""When the search counts as finished: every trial errored or done (ran its epochs, or ASHA
stopped it), however Tune marked them when it stopped."""

from types import SimpleNamespace

from mgc.run.sweep import ended_trials


def result(error=None, **metrics):
    return SimpleNamespace(error=error, metrics=metrics)


def test_a_trial_interrupted_while_running_has_not_ended():
    finished = result(done=True, training_iteration=6)
    stopped_by_asha = result(done=True, training_iteration=1)
    failed = result(RuntimeError("lost"), done=False, training_iteration=2)
    # What Tune 2.60 hands back for a trial running when a signal stopped it: TERMINATED, with
    # its last report (done False), or none yet.
    interrupted, not_reported = result(done=False, training_iteration=3), result()
    assert ended_trials([finished, stopped_by_asha, failed]) == 3
    assert ended_trials([finished, interrupted, not_reported, failed]) == 2
