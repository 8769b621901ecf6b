"""`python -m mgc.predict PATH...`: the genre of any audio file, or of every audio file in folders.

The command line; the work is done by `mgc.serve.predict`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mgc.core.cli import run_command
from mgc.core.fsio import atomic_write
from mgc.data.datasets import printable
from mgc.models.bundle import load_bundle
from mgc.serve.predict import (
    BUNDLED_MODEL,
    UsageError,
    build_parser,
    check_options,
    find_audio,
    output_format,
    predict_local,
    predict_ray,
    reject_threshold,
    render,
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def run() -> int:
        try:
            opts = check_options(args)
            files, ignored = find_audio(args.paths)
        except UsageError as exc:
            parser.error(str(exc))  # prints usage and the message, exits 2
        if not files:
            parser.error("no audio files in " + ", ".join(args.paths))
        bundle_path = Path(args.model) if args.model else BUNDLED_MODEL
        bundle = load_bundle(bundle_path)
        opts.top_k = min(opts.top_k, len(bundle.genres))
        try:
            opts.reject_below = reject_threshold(args.reject_below, bundle, bundle_path)
        except UsageError as exc:
            parser.error(str(exc))
        if args.ray:
            rows = list(predict_ray(files, bundle_path, opts))
        else:
            rows = list(predict_local(files, bundle, bundle_path, opts, args.device))
        failed = [r for r in rows if "error" in r]
        for r in failed:
            print(f"error: {printable(r['file'])}: {r['error']}", file=sys.stderr)
        if ignored:
            print(f"ignored {len(ignored)} file(s) that are not audio", file=sys.stderr)
        text = render(rows, output_format(args), bundle.genres)
        if args.out:
            atomic_write(args.out, text)
        else:
            sys.stdout.write(text)
        return 1 if failed else 0

    return run_command(run)


if __name__ == "__main__":
    raise SystemExit(main())
