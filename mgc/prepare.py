"""`python -m mgc.prepare CONFIG [overrides]`: log-mel features for a dataset, sharded by Ray Data.

The command line; the work is done by `mgc.data.prepare`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mgc.core.cli import config_and_overrides, run_command
from mgc.core.config import load_config, save_config
from mgc.data.datasets import printable
from mgc.data.prepare import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", nargs="?", help="YAML config (defaults are used when omitted)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--no-ray", action="store_true", help="compute in this process (debugging)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, overrides = config_and_overrides(args.config, args.overrides)

    def run() -> int:
        cfg = load_config(config, overrides)
        result = prepare(cfg, use_ray=not args.no_ray)
        if "://" not in cfg.cache.dir:
            save_config(cfg, Path(result.manifest).with_suffix(".config.yaml"))
        total = len(result.entries)
        rate = result.computed / result.seconds if result.seconds > 0 else 0.0
        print(
            f"prepared {total - result.failed}/{total} tracks: {result.computed} computed, "
            f"{result.reused} from cache, {result.failed} skipped; {result.seconds:.1f} s "
            f"({rate:.1f} tracks/s computed) + Ray start {result.ray_seconds:.1f} s"
        )
        if cfg.augment.copies:
            print(
                f"augmented copies: {result.copies} made ({cfg.augment.copies} per training "
                "track; those already stored were kept)"
            )
        for e in result.bad:
            print(f"  skipped {printable(e.error or '')}")  # older manifests: raw names
        for path, why in result.ignored:
            print(f"  ignored {printable(path)}: {why}")
        print(f"manifest: {result.manifest}")
        return 0

    return run_command(run, "run the same command again; finished tracks are kept")


if __name__ == "__main__":
    raise SystemExit(main())
