"""`python -m mgc.publish RUN_DIR [RUN_DIR ...] --out DIR --id ID`: a trained run as a shippable

The command line; the work is done by `mgc.serve.publish`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgc.core.cli import run_command
from mgc.serve.publish import publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.publish", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders; the first is shipped")
    parser.add_argument("--out", type=Path, required=True, help="e.g. mgc/bundled/gtzan")
    parser.add_argument("--id", required=True, help="model id printed by mgc.predict")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--trained-on", help="machine, for runs that did not record it")
    parser.add_argument(
        "--robustness", type=Path, help="bench/robustness.py's json for this model, for the card"
    )
    parser.add_argument(
        "--latency", type=Path, help="bench/predict.py's json for this model, for the card"
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="ship every run (seeds of one frozen-trunk musicnn recipe) as one model: their "
        "heads on the shared trunk, probabilities averaged",
    )
    args = parser.parse_args(argv)

    def run() -> int:
        out = publish(
            args.runs,
            args.out,
            args.id,
            args.force,
            args.trained_on,
            args.robustness,
            args.latency,
            args.ensemble,
        )
        print(f"published {args.runs[0]} as {args.id}: {out}")
        return 0

    return run_command(run)


if __name__ == "__main__":
    raise SystemExit(main())
