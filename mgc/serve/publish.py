"""`python -m mgc.publish RUN_DIR [RUN_DIR ...] --out DIR --id ID [--ensemble]`: a trained run
as a shippable model: its bundle, a config that `mgc.results.evaluate` can use anywhere, and a
model card.

The first run is the one shipped; every run given (the same recipe with other seeds) counts in
the card's mean ± std. Every number on the card is read from the runs' own metrics.json. With
`--ensemble` (seeds of a frozen-trunk musicnn probe) all of them are shipped as one model, their
heads on the shared trunk, and its track figures come from the runs' test predictions.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mgc.core.config import ConfigError, ModelConfig, load_config
from mgc.core.fsio import atomic_path, atomic_write, staged_folder
from mgc.models.adapter import TORCH_WEIGHTS
from mgc.models.bundle import BUNDLE_DIR, load_bundle
from mgc.results.metrics import classification_metrics

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
METRICS = ("track_accuracy", "track_macro_f1", "chunk_accuracy", "chunk_macro_f1")

# What GTZAN is and is not, for anyone deciding whether this model fits their music.
DATA_NOTES = [
    "GTZAN: 30 s excerpts, 22050 Hz mono, 10 genres, collected around 2000-2001 from CDs, radio "
    "and microphone recordings; here 807 of its 1000 clips (blues 100, classical 100, country "
    "100, jazz 100, hiphop 98, pop 98, metal 92, rock 51, reggae 48, disco 20).",
    "Known faults (Sturm 2013): exact repeats, several excerpts of the same recording, "
    "mislabelled clips and one artist dominating some genres. On the stratified split these "
    "can fall in both training and test, which flatters test accuracy; the artist-filtered "
    "split (data.split=fault_filtered) is the honest measure.",
]
UNCALIBRATED = (
    "Scores are the mean over 3 s windows; they are not calibrated probabilities, and a "
    "mixed-genre track gets a mixed answer (use --segments to see it along the file)."
)
LIMITATIONS = [
    "Ten genres only; anything else (electronic, folk, metalcore, K-pop, speech) is forced "
    "into the nearest of the ten.",
    "Trained on 30 s excerpts of late-1990s recordings; modern production, live recordings "
    "and low-fidelity phone captures may score differently.",
    UNCALIBRATED,
    "Not for decisions about people or royalties; it is a research baseline.",
]


def _mean_std(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"mean": statistics.fmean(values), "n": len(values)}
    if len(values) > 1:  # one run has no spread; say nothing rather than ± 0
        out["std"] = statistics.stdev(values)
    out["runs"] = values
    return out


def _read_run(run_dir: Path) -> dict[str, Any]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (not a finished mgc.run.train run)")
    return json.loads(metrics_path.read_text())


def portable_config(run_dir: Path) -> dict[str, Any]:
    """The run's config with this machine's paths put back to their environment defaults."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["root"] = "${MGC_DATA_ROOT:-data/gtzan}"
    cfg["data"]["extra_train_roots"] = []
    cfg["cache"]["dir"] = "${MGC_CACHE_DIR:-.mgc_cache}"
    cfg["run"]["out_dir"] = "runs"
    return cfg


# What a card says about pretrained weights inside the model: where they come from, the licence.
PRETRAINED_NOTES = {
    "musicnn": (
        "The trunk is musicnn (Pons & Serra, ISMIR 2019 LBD) with its {which} weights, converted "
        "from the TensorFlow checkpoints in the PyPI wheel musicnn==0.1.0 (ISC licence, "
        "Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019); wheel and file "
        "sha256s, and the licence text, in "
        "mgc/bundled/musicnn/PROVENANCE.md."
    ),
}


def pretrained_note(pretrained: str | None) -> str | None:
    """The card's line on pretrained weights (`info["pretrained"]`, e.g. "musicnn:msd")."""
    family, _, which = (pretrained or "scratch").partition(":")
    note = PRETRAINED_NOTES.get(family)
    return note.format(which=which.upper()) if note else None


def ensemble_test(runs: list[Path]) -> dict[str, float]:
    """Track accuracy and macro-F1 of the runs as one model, from their test predictions.csv:
    a head ensemble's track probability is the mean over windows of the mean over heads, the
    mean of the runs' track probabilities."""
    frames = [pd.read_csv(r / "predictions.csv").sort_values("track") for r in runs]
    if any(list(f["track"]) != list(frames[0]["track"]) for f in frames[1:]):
        raise ConfigError("the runs were not tested on the same tracks: no ensemble figures")
    columns = [c for c in frames[0].columns if c.startswith("p_")]
    genres = [c[2:] for c in columns]
    mean = np.mean([f[columns].to_numpy(dtype=np.float64) for f in frames], axis=0)
    truth = frames[0]["true_genre"].map({g: i for i, g in enumerate(genres)}).to_numpy()
    scores = classification_metrics(truth, mean.argmax(axis=1), len(genres))
    return {"track_accuracy": scores["accuracy"], "track_macro_f1": scores["macro_f1"]}


def model_card(
    model_id: str, runs: list[Path], trained_on: str | None, ensemble: bool = False
) -> dict[str, Any]:
    metrics = [_read_run(r) for r in runs]
    first, cfg = metrics[0], load_config(runs[0] / "config.yaml")
    recipes = {
        json.dumps({**yaml.safe_load((r / "config.yaml").read_text())["train"], "seed": 0})
        for r in runs
    }
    if len(recipes) > 1:
        raise ConfigError("the runs differ in more than train.seed: not seeds of one recipe")
    command = runs[0] / "command.txt"
    machine = first.get("machine") or ({"cpu": trained_on} if trained_on else "not recorded")
    return {
        "model_id": model_id,
        "model": first["model"],
        "params": first["params"] * (len(runs) if ensemble else 1),
        "frozen_params": int(load_bundle(runs[0]).info.get("frozen_params", 0)),
        "genres": load_bundle(runs[0]).genres,
        "command": command.read_text().strip() if command.is_file() else "not recorded",
        "config": "config.yaml (beside this card; paths reset to their environment defaults)",
        "recipe": {
            "optimizer": cfg.train.optimizer,
            "lr": cfg.train.lr,
            "weight_decay": cfg.train.weight_decay,
            "scheduler": cfg.train.scheduler,
            "label_smoothing": cfg.train.label_smoothing,
            "specaugment": cfg.train.specaugment.enabled,
            "chunk_jitter": cfg.train.chunk_jitter,
            "epochs": cfg.train.epochs,
            "batch_size": cfg.train.batch_size,
            **({"frozen_trunk": True} if cfg.model.freeze else {}),
            **(
                {
                    "augmented_copies": cfg.augment.copies,
                    "augment": cfg.augment.conditions,
                    "conditions_per_copy": cfg.augment.per_copy,
                    "bandlimit_rates": cfg.augment.bandlimit_rates,
                }
                if cfg.augment.copies
                else {}
            ),
            **({"consistency": cfg.train.consistency} if cfg.train.consistency else {}),
        },
        "pretrained": pretrained_note(load_bundle(runs[0]).info.get("pretrained")),
        "features": vars(cfg.features),
        "chunks": vars(cfg.chunks),
        "split": first["split"],
        "tracks": first["n_tracks"],
        "shipped_seed": "ensemble" if ensemble else first["seed"],
        "seeds": [m["seed"] for m in metrics],
        "best_epoch": [m["best_epoch"] for m in metrics] if ensemble else first["best_epoch"],
        "test": {k: _mean_std([m["test"][k] for m in metrics]) for k in METRICS},
        "shipped_test": (
            ensemble_test(runs) if ensemble else {k: first["test"][k] for k in METRICS}
        ),
        "trained_on": machine,
        "train_seconds": first.get("seconds"),
        "data": DATA_NOTES,
        "limitations": LIMITATIONS,
    }


def robust_card(card: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """The card with `bench/robustness.py`'s figures for this model (its robustness.json)."""
    keep = ("split", "clips", "clips_per_genre", "cpu", "native_bf16", "torch")
    conditions = {
        name: {
            "agreement": c["agreement"],
            "accuracy": c["accuracy"],
            "per_genre_agreement": {g: v["agreement"] for g, v in c["per_genre"].items()},
        }
        for name, c in bench["conditions"].items()
    }
    return {
        **card,
        "robustness": {**{k: bench[k] for k in keep if k in bench}, **{"conditions": conditions}},
    }


def timed_card(card: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """The card with `bench/predict.py`'s cost of one 30 s clip on one thread (its json)."""
    part = bench["per_clip_one_thread"]
    return {
        **card,
        "latency": {
            "total_ms": part["total_ms"],
            "model_ms": {k: v for k, v in part["stage_ms"]["model"].items()},
            "ratio_vs_seed": part["ratio"],
            "columns": part["columns"],
            "machine": bench["machine"],
            # bench/predict.py's aim for one clip (its TARGET_MS), when the json has it.
            "target_ms": bench.get("settings", {}).get("target_ms"),
        },
    }


def latency_lines(lat: dict[str, Any]) -> list[str]:
    """The card's section on what one clip costs, against the seed-style pipeline."""
    cols, total, model = lat["columns"], lat["total_ms"], lat["model_ms"]
    rows = [
        f"| {cols[k]} | {total[k]:.1f} ms | {model[k]:.1f} ms | {lat['ratio_vs_seed'][k]:.2f}× |"
        for k in cols
    ]
    return [
        "## Cost",
        "",
        f"`bench/predict.py`, one 30 s clip end to end on one thread "
        f"({_machine_text({k: lat['machine'][k] for k in ('cpu', 'native_bf16', 'torch')})}):",
        "",
        "| pipeline | per clip | model stage | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
        *trade_lines(lat),
    ]


def trade_lines(lat: dict[str, Any]) -> list[str]:
    """A sentence for a model that costs more than bench/predict.py's aim: by how much, and
    where the card shows what that buys. Nothing when it meets the aim or the aim is unknown."""
    target, total = lat.get("target_ms"), lat["total_ms"].get("mgc")
    if not target or total is None or total <= target:
        return []
    return [
        f"The trade: {total:.1f} ms a clip is {total / target:.1f}× the {target:.0f} ms that "
        "`bench/predict.py` aims for on one thread. What the extra cost buys is the test scores "
        "and the robustness figures on this card; where speed matters more, `mgc.predict` "
        "takes a smaller model with `--model`.",
        "",
    ]


def robustness_lines(rob: dict[str, Any]) -> list[str]:
    """The card's section on perturbed inputs: per condition, how often the answer stays."""
    lines = [
        "## Robustness",
        "",
        f"`bench/robustness.py`: {rob['clips']} test clips of the {rob['split']} split, each "
        "perturbed; agreement is how often the top genre stays the clean clip's, accuracy how "
        "often it is the true one; the weakest genre's agreement beside them.",
        "",
        "| condition | agreement | accuracy | weakest genre |",
        "|---|---|---|---|",
    ]
    for name, c in rob["conditions"].items():
        genre, worst = min(c["per_genre_agreement"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {name} | {c['agreement']:.1%} | {c['accuracy']:.1%} | {genre} {worst:.0%} |"
        )
    return [*lines, ""]


def calibrated_card(card: dict[str, Any], calibration: dict[str, Any]) -> dict[str, Any]:
    """The card of a bundle calibrated by `mgc.calibrate`: its calibration record added, and the
    limitation about uncalibrated scores said the way it now holds."""
    limitation = (
        f"Scores are the mean over windows, temperature-scaled (T = "
        f"{calibration['temperature']:.3f}) on GTZAN validation tracks: calibrated for music like "
        "GTZAN's ten genres, not for anything else, which still lands in one of the ten unless "
        "the answer is allowed to be none of them (--reject-below)."
    )
    limitations = [limitation if x == UNCALIBRATED else x for x in card.get("limitations", [])]
    return {**card, "calibration": calibration, "limitations": limitations}


def calibration_lines(cal: dict[str, Any]) -> list[str]:
    """The model card's section on calibrated scores and "none of the ten"."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    parts = [p for p in ("valid", "test") if p in cal]
    ece = "; ".join(f"{p} {cal[p]['ece_before']:.3f} → {cal[p]['ece_after']:.3f}" for p in parts)
    lines = [
        '## Calibrated scores and "none of the ten"',
        "",
        f"Track scores are temperature-scaled, softmax(log p / T) with T = "
        f"{cal['temperature']:.3f}, "
        + (
            f"fitted by the likelihood of the {cal['valid']['tracks']} validation tracks of the "
            f"{cal.get('split', '')} split"
            if cal.get("fitted_on", "valid") == "valid"
            else f"taken with the threshold below from {cal['fitted_on'].split('by ', 1)[-1]}, "
            f"a fit on train alone of the same recipe, calibrated on the {cal.get('split', '')} "
            "split's validation tracks (this model trained on them: its own figures on "
            "validation are not held out)"
        )
        + f". Expected calibration error ({cal['ece_bins']} bins): {ece}. The top genre, and "
        "so accuracy, is unchanged.",
        "",
        f'`--reject-below` (predict, web page, bot) answers "none of the ten" when the top '
        f"calibrated score is below {cal['reject_below']:.3f}, chosen on validation so that at "
        f"most {pct(cal['max_recall_loss'])} of the tracks the model names correctly lose their "
        "answer. What it costs:",
        "",
        "| part | tracks answered | recall | recall with rejection | correct answers lost "
        "| accuracy of answered |",
        "|---|---|---|---|---|---|",
    ]
    for p in parts:
        r = cal[p]["rejection"]
        lines.append(
            f"| {p} | {pct(r['answered'])} | {r['recall']:.3f} | "
            f"{r['recall_with_rejection']:.3f} | {pct(r['recall_loss'])} | "
            f"{r['accuracy_of_answered']:.3f} |"
        )
    lines.append("")
    for p in parts:
        genres = cal[p]["rejection"].get("per_genre")
        if genres:
            cost = ", ".join(
                f"{g} {v['recall']:.2f} → {v['recall_with_rejection']:.2f}"
                for g, v in genres.items()
            )
            lines += [f"Recall per genre on {p}, without → with rejection: {cost}.", ""]
    return lines


def _machine_text(machine: dict[str, Any] | str) -> str:
    if isinstance(machine, str):
        return machine
    return ", ".join(str(v) if k == "cpu" else f"{k} {v}" for k, v in machine.items())


def _params_text(card: dict[str, Any]) -> str:
    frozen = card.get("frozen_params", 0)  # cards written before it was recorded lack it
    if frozen:
        return f"{card['params']:,} trained parameters on a frozen trunk of {frozen:,}"
    return f"{card['params']:,} parameters"


def render_card(card: dict[str, Any]) -> str:
    def pm(stat: dict[str, Any]) -> str:
        text = f"{stat['mean']:.3f}"
        return text + (f" ± {stat['std']:.3f}" if "std" in stat else " (one seed)")

    t, s = card["test"], card["shipped_test"]
    lines = [
        f"# Model card: {card['model_id']}",
        "",
        f"`{card['model']}` ({_params_text(card)}), log-mel "
        f"{card['features']['n_mels']} bands at {card['features']['sample_rate']} Hz, "
        f"{card['chunks']['window_s']:g} s windows, track score = mean of the window "
        f"probabilities. Genres: {', '.join(card['genres'])}.",
        "",
        "## How it was made",
        "",
        f"    {card['command']}",
        "",
        "The whole configuration is `config.yaml` beside this card: `python -m mgc.train "
        "<this folder>/config.yaml data.root=/path/to/gtzan` trains the recipe again.",
        "",
        *(
            [
                f"The other seeds ran the same recipe with `train.seed` set to each of {card['seeds'][1:]}.",
                "",
            ]
            if len(card["seeds"]) > 1
            else []
        ),
        *(
            [
                f"Shipped as one model: the {len(card['seeds'])} seeds' heads on the shared "
                "frozen trunk, its probabilities the mean of theirs (one trunk pass; chunk-level "
                "figures are the seeds' own).",
                "",
            ]
            if card["shipped_seed"] == "ensemble"
            else []
        ),
        f"Recipe: {json.dumps(card['recipe'])}. Best epoch {card['best_epoch']}. "
        f"Trained on: {_machine_text(card['trained_on'])}"
        + (f", {card['train_seconds'] / 60:.0f} min." if card.get("train_seconds") else "."),
        "",
        f"## Test results ({card['split']} split; tracks train/valid/test "
        f"{'/'.join(str(card['tracks'].get(p, 0)) for p in ('train', 'valid', 'test'))})",
        "",
        "| | "
        + (
            f"shipped (ensemble of seeds {card['seeds']})"
            if card["shipped_seed"] == "ensemble"
            else f"shipped (seed {card['shipped_seed']})"
        )
        + " | seeds "
        + str(card["seeds"])
        + " |",
        "|---|---|---|",
        *(
            f"| {k.replace('_', ' ')} | {f'{s[k]:.3f}' if k in s else '–'} | {pm(t[k])} |"
            for k in METRICS
        ),
        "",
        "Reproduce the shipped row: `python -m mgc.evaluate mgc/bundled/gtzan "
        "data.root=/path/to/gtzan --out eval/` (track level is the mean of chunk probabilities).",
        "",
        *(robustness_lines(card["robustness"]) if "robustness" in card else []),
        *(latency_lines(card["latency"]) if "latency" in card else []),
        "## Data",
        "",
        *(f"- {note}" for note in card["data"]),
        *([f"- {card['pretrained']}"] if card.get("pretrained") else []),
        "",
        *(calibration_lines(card["calibration"]) if "calibration" in card else []),
        "## Not good for",
        "",
        *(f"- {item}" for item in card["limitations"]),
        "",
    ]
    return "\n".join(lines)


def merge_heads(runs: list[Path], staging: Path, meta: dict[str, Any]) -> None:
    """The runs' heads on their shared frozen trunk, as one bundle in `staging`: weights
    `head.members.<i>.*` from run i's `head.*`, `model.heads` the number of runs. Runs whose
    model settings or trunk weights differ are refused."""
    states, models = [], []
    for run in runs:
        bundle_meta = json.loads((run / BUNDLE_DIR / "bundle.json").read_text())
        models.append(ModelConfig(**bundle_meta["model"]))  # older bundles lack later keys
        states.append(torch.load(run / BUNDLE_DIR / TORCH_WEIGHTS, weights_only=True))
    first = models[0]
    if first.name != "musicnn" or not first.freeze:
        raise ConfigError("--ensemble: only musicnn with a frozen trunk (model.freeze) shares one")
    if any(m != first for m in models[1:]):
        raise ConfigError("--ensemble: the runs' model settings differ")
    trunk = {k: v for k, v in states[0].items() if not k.startswith("head.")}
    for run, state in zip(runs[1:], states[1:], strict=True):
        if any(not torch.equal(state[k], v) for k, v in trunk.items()):
            raise ConfigError(f"--ensemble: {run}'s trunk weights differ from {runs[0]}'s")
    merged = dict(trunk)
    for i, state in enumerate(states):
        merged.update(
            (f"head.members.{i}.{k.removeprefix('head.')}", v)
            for k, v in state.items()
            if k.startswith("head.")
        )
    with atomic_path(staging / TORCH_WEIGHTS) as tmp:
        torch.save(merged, tmp)
    meta["model"]["heads"] = len(runs)
    meta["info"]["params"] = len(runs) * int(meta["info"]["params"])
    meta["info"]["heads"] = len(runs)


def publish(
    runs: list[Path],
    out: Path,
    model_id: str,
    force: bool,
    trained_on: str | None,
    robustness: Path | None = None,
    latency: Path | None = None,
    ensemble: bool = False,
) -> Path:
    if out.exists() and not force:
        raise ConfigError(f"{out}: exists; pass --force to replace it")
    if ensemble and len(runs) < 2:
        raise ConfigError("--ensemble needs two or more runs (seeds of one recipe)")
    card = model_card(model_id, runs, trained_on, ensemble)
    if robustness is not None:
        card = robust_card(card, json.loads(Path(robustness).read_text()))
    if latency is not None:
        card = timed_card(card, json.loads(Path(latency).read_text()))
    # Built beside the target, then swapped in: a reader never sees half a model.
    with staged_folder(out, replace=True) as staging:
        shutil.copytree(runs[0] / BUNDLE_DIR, staging, dirs_exist_ok=True)
        meta = json.loads((staging / "bundle.json").read_text())
        meta["info"]["model_id"] = model_id
        if ensemble:
            merge_heads(runs, staging, meta)
        atomic_write(staging / "bundle.json", json.dumps(meta, indent=2) + "\n")
        atomic_write(
            staging / "config.yaml", yaml.safe_dump(portable_config(runs[0]), sort_keys=False)
        )
        atomic_write(staging / CARD_JSON, json.dumps(card, indent=2) + "\n")
        atomic_write(staging / CARD_MD, render_card(card))
    return out
