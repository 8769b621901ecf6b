"""`python -m mgc.train CONFIG [overrides]`: one training run → a run folder. Imports nothing from Ray.

The command line; the work is done by `mgc.run.train`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from mgc.core.cli import config_and_overrides, run_command
from mgc.core.config import ConfigError, load_config
from mgc.core.fsio import atomic_write
from mgc.data.datasets import printable
from mgc.data.prepare import prepare
from mgc.run.train import default_run_dir, log, trainer_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", nargs="?", help="YAML config (ablations/e0.yaml, …)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--run-dir", help="run folder (default: runs/<experiment>-<model>-<time>)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, overrides = config_and_overrides(args.config, args.overrides)
    run_dir: Path | None = Path(args.resume) if args.resume else None

    def train() -> int:
        nonlocal run_dir
        if run_dir is not None:
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"{run_dir}: not a run folder (config.yaml missing)")
            cfg = load_config(run_dir / "config.yaml", overrides)
        else:
            cfg = load_config(config, overrides)
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
            # The exact command, for model cards and for whoever reruns it.
            argv_text = shlex.join(["python", "-m", "mgc.train", *(argv or sys.argv[1:])])
            atomic_write(run_dir / "command.txt", argv_text + "\n")
        prep = prepare(cfg, use_ray=False)  # features this run reads, computed here if missing
        for e in prep.bad:
            log.warning("skipped %s", e.error)
        for path, why in prep.ignored:
            log.info("ignored %s: %s", printable(path), why)
        result = trainer_for(cfg)(cfg, run_dir=run_dir, resume=bool(args.resume))
        m = result.metrics
        print(f"run: {result.run_dir}")
        if test := m.get("test"):
            print(
                f"test ({m['split']}): chunk acc {test['chunk_accuracy']:.3f} macro-F1 "
                f"{test['chunk_macro_f1']:.3f} | track acc {test['track_accuracy']:.3f} "
                f"macro-F1 {test['track_macro_f1']:.3f} | params {m['params']:,}"
            )
        return 0

    def resume_hint() -> str:
        return f"resume with  python -m mgc.train --resume {run_dir}" if run_dir else ""

    return run_command(train, resume_hint)


if __name__ == "__main__":
    raise SystemExit(main())
