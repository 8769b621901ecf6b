"""`python -m mgc.evaluate RUN_DIR [overrides]`: metrics and artifacts of a model on a split part.

The command line; the work is done by `mgc.results.evaluate`.
"""

from __future__ import annotations

import argparse
import logging

from mgc.core.cli import run_command
from mgc.data.prepare import prepare
from mgc.results.evaluate import evaluate_run, run_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_dir", help="a run folder written by mgc.train")
    parser.add_argument(
        "overrides", nargs="*", help="e.g. data.split=fault_filtered data.root=/data/gtzan"
    )
    parser.add_argument("--part", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--out", help="artifacts folder (default: RUN_DIR/eval-<split>-<part>)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # `split=…` and `root=…` are short for the data section's keys.
    overrides = [
        f"data.{o}" if o.split("=", 1)[0] in ("split", "root") else o for o in args.overrides
    ]

    def evaluate() -> int:
        cfg, _ = run_config(args.run_dir, overrides)
        prepare(cfg, use_ray=False)  # the bundle's features for this data, computed if missing
        out_dir, m = evaluate_run(args.run_dir, overrides, args.part, args.out)
        print(
            f"{m['split']} {m['part']}: chunk acc {m['chunk_accuracy']:.3f} macro-F1 "
            f"{m['chunk_macro_f1']:.3f} | track acc {m['track_accuracy']:.3f} macro-F1 "
            f"{m['track_macro_f1']:.3f} ({m['n_tracks']} tracks)"
        )
        print(f"artifacts: {out_dir}")
        return 0

    return run_command(evaluate)


if __name__ == "__main__":
    raise SystemExit(main())
