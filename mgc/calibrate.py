"""`python -m mgc.calibrate MODEL --out DIR [overrides]`: a calibrated copy of a model bundle.

Fits a temperature for the bundle's track scores on the validation tracks of its own split (the
likelihood of the true genres), and the top score under which it answers "none of the ten"
(`--max-recall-loss`: the share of correctly named validation tracks it may cost), and writes
them, with ECE before and after and the threshold's cost on validation and test, into a NEW
bundle folder; the model card beside a published bundle gets a section saying so. The model
given is never changed. The features come from the cache (computed first when missing), as for
`mgc.evaluate`. A model refit on train + validation has no held-out validation tracks: `--like`
gives it the temperature and threshold of a calibrated twin fitted on train alone.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mgc.core.cli import run_command
from mgc.core.config import ConfigError
from mgc.data.prepare import prepare
from mgc.models.bundle import bundle_folder, load_bundle, write_calibrated
from mgc.results.calibration import MAX_RECALL_LOSS, fit_bundle_calibration
from mgc.results.evaluate import run_config
from mgc.serve.publish import CARD_JSON, CARD_MD, calibrated_card, render_card


def new_files(model: Path, calibration: dict) -> dict[str, str]:
    """The files the calibrated bundle gets besides the source's own: a run folder's config
    (a bundle folder carries its own), and the model card with its calibration section."""
    folder = bundle_folder(model)
    extra: dict[str, str] = {}
    if folder != model and (model / "config.yaml").is_file():
        extra["config.yaml"] = (model / "config.yaml").read_text()
    if (folder / CARD_JSON).is_file():
        card = calibrated_card(json.loads((folder / CARD_JSON).read_text()), calibration)
        extra[CARD_JSON] = json.dumps(card, indent=2) + "\n"
        extra[CARD_MD] = render_card(card)
    return extra


def summary(record: dict, out: Path) -> str:
    lines = [f"temperature {record['temperature']:.3f}, reject below {record['reject_below']:.3f}"]
    for part in ("valid", "test"):
        if part in record:
            r, cost = record[part], record[part]["rejection"]
            lines.append(
                f"{part} ({r['tracks']} tracks): ECE {r['ece_before']:.3f} -> {r['ece_after']:.3f}"
                f", NLL {r['nll_before']:.3f} -> {r['nll_after']:.3f}; rejection answers "
                f"{100 * cost['answered']:.1f} %, recall {cost['recall']:.3f} -> "
                f"{cost['recall_with_rejection']:.3f} ({100 * cost['recall_loss']:.1f} % of "
                f"correct answers lost), accuracy of answered {cost['accuracy_of_answered']:.3f}"
            )
    lines.append(f"calibrated bundle: {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.calibrate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", type=Path, help="a bundle folder with its config.yaml, or a run")
    parser.add_argument("overrides", nargs="*", help="e.g. data.root=/data/gtzan cache.dir=…")
    parser.add_argument("--out", type=Path, required=True, help="the new bundle folder")
    parser.add_argument(
        "--max-recall-loss",
        type=float,
        default=MAX_RECALL_LOSS,
        help="share of correctly named validation tracks the rejection threshold may cost "
        f"(default {MAX_RECALL_LOSS})",
    )
    parser.add_argument(
        "--like",
        type=Path,
        help="a calibrated bundle whose temperature and threshold to use: for a model refit on "
        "train + validation (train.include_valid), its twin fitted on train alone",
    )
    args = parser.parse_intermixed_args(argv)
    if not 0 <= args.max_recall_loss < 1:
        parser.error("--max-recall-loss must be in [0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # `split=…` and `root=…` are short for the data section's keys, as for mgc.evaluate.
    overrides = [
        f"data.{o}" if o.split("=", 1)[0] in ("split", "root") else o for o in args.overrides
    ]

    def run() -> int:
        if args.out.exists():  # before minutes of features and scoring, not after
            raise ConfigError(f"{args.out}: exists; choose a new folder for the calibrated bundle")
        cfg, bundle = run_config(args.model, overrides)
        prepare(cfg, use_ray=False)  # the bundle's features for this data, computed if missing
        like = (str(args.like), load_bundle(args.like)) if args.like else None
        record = fit_bundle_calibration(bundle, cfg, args.max_recall_loss, like)
        out = write_calibrated(args.model, args.out, record, new_files(args.model, record))
        print(summary(record, out))
        return 0

    return run_command(run)


if __name__ == "__main__":
    raise SystemExit(main())
