"""What a sweep will cost and what it did cost: trial-epochs under ASHA, an estimate from a timed
first step, and the wall time a sweep spends across interruptions and resumes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mgc.core.config import Config, with_params
from mgc.core.fsio import atomic_write, storage_join
from mgc.models import remembers_embeddings

SPENT_FILE = "mgc_sweep_seconds.json"


def asha_trial_epochs(num_samples: int, max_t: int, grace: int, reduction_factor: int) -> float:
    """Expected trial-epochs of an ASHA sweep when each rung lets 1/reduction_factor of the
    trials that reach it go on (Ray's rungs: grace, grace·rf, grace·rf², … below max_t)."""
    rungs, m = [], max(1, min(grace, max_t))
    while m < max_t:
        rungs.append(m)
        m *= reduction_factor
    total, alive, done = 0.0, float(num_samples), 0
    for rung in rungs:
        total += alive * (rung - done)
        done, alive = rung, alive / reduction_factor
    return total + alive * (max_t - done)


@dataclass
class Budget:
    """A row's cost, stated before it starts and recorded with it: the search in trial-epochs
    at low fidelity, then the final seeds at the full budget."""

    num_samples: int
    max_epochs: int  # a trial's, at most
    grace_period: int
    reduction_factor: int
    windows_per_track: int  # a trial's epoch; 0: every window of every track
    final_seeds: int
    grid_trial_epochs: int  # every trial to the end: what ASHA saves is measured against it
    expected_trial_epochs: float
    train_samples_per_epoch: int  # a trial's epoch
    valid_samples: int
    # The final seeds' budget (`sweep.final`): epochs at most, windows of an epoch, patience.
    final_max_epochs: int = 0
    final_windows_per_track: int = 0
    final_samples_per_epoch: int = 0
    final_patience: int = 0
    # A frozen pretrained trunk whose inputs repeat from epoch to epoch (no SpecAugment, no
    # jitter): a fit computes each window's trunk output once, its later epochs train the head.
    frozen_trunk: bool = False
    # sweep.final.refit: each seed fits again on train + validation for its best epoch count.
    final_refit: bool = False

    @classmethod
    def of(cls, cfg: Config, train_frames: list[int], valid_frames: list[int]) -> Budget:
        """From the config and the frame counts of the training and validation tracks."""
        from mgc.features.frontend import Frontend

        windowing = Frontend(cfg.features, cfg.chunks).windowing

        def windows(per_track: int) -> int:
            return sum(per_track or len(windowing.starts(n)) for n in train_frames)

        s, e = cfg.sweep, cfg.train.epochs
        final = with_params(cfg, final_overrides(cfg)).train
        return cls(
            num_samples=s.num_samples,
            max_epochs=e,
            grace_period=min(s.grace_period, e),
            reduction_factor=s.reduction_factor,
            windows_per_track=cfg.train.windows_per_track,
            final_seeds=len(s.final_seeds),
            grid_trial_epochs=s.num_samples * e,
            expected_trial_epochs=asha_trial_epochs(
                s.num_samples, e, s.grace_period, s.reduction_factor
            ),
            train_samples_per_epoch=windows(cfg.train.windows_per_track),
            valid_samples=sum(len(windowing.starts(n)) for n in valid_frames),
            final_max_epochs=final.epochs,
            final_windows_per_track=final.windows_per_track,
            final_samples_per_epoch=windows(final.windows_per_track),
            final_patience=final.early_stopping_patience,
            frozen_trunk=cfg.model.freeze and remembers_embeddings(cfg),
            final_refit=s.final.refit,
        )

    @classmethod
    def grid(cls, n_trials: int, final_seeds: int, n_train: int, n_valid: int) -> Budget:
        """A one-fit-per-trial grid search (a scikit-learn row): every trial one 'epoch' over
        every training sample, nothing stopped early."""
        return cls(
            num_samples=n_trials,
            max_epochs=1,
            grace_period=1,
            reduction_factor=1,
            windows_per_track=0,
            final_seeds=final_seeds,
            grid_trial_epochs=n_trials,
            expected_trial_epochs=float(n_trials),
            train_samples_per_epoch=n_train,
            valid_samples=n_valid,
            final_max_epochs=1,
            final_samples_per_epoch=n_train,
        )

    def epoch_seconds(self, samples_per_s: float, train_samples: int | None = None) -> float:
        """An epoch of `train_samples` training windows (a trial's by default) and validation."""
        train = self.train_samples_per_epoch if train_samples is None else train_samples
        # Validation is forward only, about a third of a training step's work per sample.
        return (train + self.valid_samples / 3) / samples_per_s

    def describe(self, samples_per_s: float, slots: int) -> str:
        """The budget in one line, with an estimate of its hours when `slots` runs (trials,
        then final seeds) go at once, each at `samples_per_s`. The seeds are counted at their
        most epochs: early stopping can only make them cheaper."""
        trial_epoch = self.epoch_seconds(samples_per_s)
        seed_epoch = self.epoch_seconds(samples_per_s, self.final_samples_per_epoch)
        trials_at_once = max(1, min(slots, self.num_samples))
        seeds_at_once = max(1, min(slots, self.final_seeds))
        search = self.expected_trial_epochs * trial_epoch / trials_at_once
        # A frozen trunk over every window: the first epoch is the cost, the head's are seconds.
        once = self.frozen_trunk and not self.final_windows_per_track
        seed_epochs = 1 if once else self.final_max_epochs
        seeds = self.final_seeds * seed_epochs * seed_epoch / seeds_at_once
        # A refit runs at most the epochs its first fit ran (a frozen trunk's: the head's only).
        seeds *= 2 if self.final_refit and not once else 1
        search_part = (
            f"search {self.num_samples} trials x up to {self.max_epochs} epochs of "
            f"{_windows(self.train_samples_per_epoch, self.windows_per_track)} (~{trial_epoch:.0f} s"
            f" here), ASHA grace {self.grace_period} rf {self.reduction_factor}: "
            f"~{self.expected_trial_epochs:.0f} trial-epochs expected (all to the end: "
            f"{self.grid_trial_epochs}); then "
            if self.num_samples
            else "no search; "
        )
        patience = (
            f", early stop after {self.final_patience} epochs without a better val macro-F1"
            if self.final_patience
            else ""
        )
        return (
            f"budget: {search_part}{self.final_seeds} seeds x up to {self.final_max_epochs} "
            f"epochs of {_windows(self.final_samples_per_epoch, self.final_windows_per_track)} "
            f"(~{seed_epoch:.0f} s here"
            + (
                ", the first only: the frozen trunk's outputs are kept, later epochs train the head"
                if once
                else ""
            )
            + f"){patience}"
            + (
                ", each then refit on train + validation for its best epoch count"
                if self.final_refit
                else ""
            )
            + f"; validation {self.valid_samples} windows; "
            f"{samples_per_s:.3g} samples/s timed; ~{(search + seeds) / 3600:.1f} h with "
            + (f"{trials_at_once} trial(s), then " if self.num_samples else "")
            + f"{seeds_at_once} seed(s) at a time"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _windows(samples: int, per_track: int) -> str:
    return f"{samples} windows (" + (f"{per_track} per track)" if per_track else "all of them)")


def quick_look(cfg: Config) -> Config:
    """`sweep.budget=quick`: the row's recipe in minutes, to see that it runs and roughly how
    it does. At most 4 trials of 2 epochs, seeds of 3 epochs of 2 windows per track, no early
    stopping. Its row and its search go under `quick/` beside the full ones, so they never mix
    with the table's rows or continue a full search."""
    s = cfg.sweep
    return with_params(
        cfg,
        {
            "sweep.num_samples": min(s.num_samples, 4),
            "sweep.grace_period": 1,
            "train.epochs": min(cfg.train.epochs, 2),
            "train.windows_per_track": cfg.train.windows_per_track or 2,
            "sweep.final.epochs": 3,
            "sweep.final.windows_per_track": 2,
            "sweep.final.early_stopping_patience": 0,
            "sweep.results_dir": str(Path(s.results_dir) / "quick"),
            "sweep.storage_path": storage_join(s.storage_path, "quick"),
        },
    )


def final_overrides(cfg: Config) -> dict[str, Any]:
    """What the final seeds train at: the `train.*` values `sweep.final` sets (the full budget;
    a value it leaves unset stays as the trials had it). A scikit-learn model's one fit is its
    whole training, so epochs and patience do not apply to it."""
    from mgc.models import is_sklearn

    skip = {"refit"} | (
        {"epochs", "early_stopping_patience"} if is_sklearn(cfg.model.name) else set()
    )
    values = vars(cfg.sweep.final).items()
    return {f"train.{k}": v for k, v in values if v is not None and k not in skip}


def load_average() -> float:
    """The machine's one-minute load average; 0 where the OS has none (Windows)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def busy_note(load: float, cpus: int) -> str | None:
    """A warning for the cost line when the step was timed on a busy machine (`load`: the
    one-minute load average, `cpus`: the machine's CPUs): other work's share of the CPUs slows
    the step, so the hours it gives are too many. None on a machine no busier than its CPUs."""
    if load <= cpus:
        return None
    return (
        f"budget: timed beside other work (load average {load:.1f} on {cpus} CPUs), so the "
        "hours above are an overestimate"
    )


def time_training_step(cfg: Config, threads: int, steps: int = 3) -> float:
    """Training samples per second of cfg's model on this machine with `threads` threads: a
    warm-up step, then `steps` timed ones on random input of the real shape, with the model,
    optimiser and loss a run builds (`build_training`)."""
    from mgc.features.frontend import Frontend
    from mgc.models import is_sklearn
    from mgc.run.train import build_training, fast_path, train_step

    if is_sklearn(cfg.model.name):
        return float("inf")  # one fit, seconds: not worth timing
    classes = 10  # GTZAN's genres; the count barely moves a step's cost
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = fast_path(cfg.train)
        training = build_training(cfg, classes, fast)
        if cfg.model.freeze_front_end and remembers_embeddings(cfg):
            # Every epoch after the first reuses the fixed front end's output: time those.
            training.model.remember_embeddings(True)
        window = Frontend(cfg.features, cfg.chunks).windowing.window
        x = torch.randn(cfg.train.batch_size, 1, cfg.features.n_mels, window)
        y = torch.randint(0, classes, (cfg.train.batch_size,))
        # Under consistency a step also trains on the windows' augmented copies: twice the input.
        x_copy = x.clone() if cfg.train.consistency > 0 else None

        def step() -> None:
            train_step(
                training.model,
                x,
                y,
                training.optimizer,
                training.loss_fn,
                fast,
                x_copy,
                cfg.train.consistency,
            )

        step()  # warm-up: the first step's allocations are no part of the rate
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * cfg.train.batch_size / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


class Clock:
    """The sweep's wall time over all its parts (call it for the seconds so far), and what each
    part held: a row resumed with another core count counts each part at its own."""

    def __init__(self, spent: dict[str, Any], part: dict[str, Any]) -> None:
        self.spent, self.part = spent, part
        self.before = sum(p["seconds"] for p in spent["parts"] if p is not part)
        self.t0 = float(part["started"])

    def __call__(self, at: float | None = None) -> float:
        """Wall seconds of all parts at time `at` (now by default)."""
        return self.before + (time.time() if at is None else at) - self.t0

    def held(self, cpus: float, gpus: float = 0.0) -> None:
        """The CPUs and GPUs this part runs on (Ray's cluster), written with it."""
        self.part.update(cpus=cpus, gpus=gpus)

    def hours(self, kind: str = "cpus", at: float | None = None) -> float:
        """Each part's hours times its `kind` ("cpus", "gpus") at time `at` (now by default); a
        part recorded before parts said what they held counts as this one."""
        now = float(self.part.get(kind, 0.0))
        seconds = sum(
            p["seconds"] * float(p.get(kind, now))
            for p in self.spent["parts"]
            if p is not self.part
        )
        return (seconds + (self(at) - self.before) * now) / 3600


@contextmanager
def time_spent(folder: Path, every: float = 30.0) -> Iterator[Clock]:
    """Record the wall time of the block in `folder/mgc_sweep_seconds.json`, as one part per run,
    so a resumed sweep reports the time of all its parts. The part is written when the block
    starts, every `every` seconds while it runs (a kill -9 loses at most that much) and when it
    ends, also by an interrupt. Yields the `Clock` of all parts so far."""
    path = folder / SPENT_FILE
    spent = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "parts": []}
    t0 = time.time()
    part: dict[str, Any] = {"started": t0, "seconds": 0.0}
    spent["parts"].append(part)
    clock = Clock(spent, part)

    def write() -> None:
        part["seconds"] = time.time() - t0
        spent["seconds"] = sum(p["seconds"] for p in spent["parts"])
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(spent, indent=1) + "\n")

    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            write()

    write()
    thread = threading.Thread(target=beat, name="mgc-time-spent", daemon=True)
    thread.start()
    try:
        yield clock
    finally:
        done.set()
        thread.join()
        write()


def seconds_spent(folder: Path) -> float:
    """Wall seconds recorded for the sweep whose experiment folder this is (0 when none)."""
    path = folder / SPENT_FILE
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0
