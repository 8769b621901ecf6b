"""Export a bundle's CNN for serving, as TorchScript or ONNX: model input in, probabilities out.

The command line; the work is done by `mgc.serve.export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgc.core.cli import run_command
from mgc.models.bundle import load_bundle
from mgc.serve.export import (
    FORMATS,
    MIN_OPSET,
    PARITY_ATOL,
    PARITY_BATCHES,
    ExportError,
    default_output,
    export_bundle,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("bundle", help="a bundle folder, or a run folder that holds one")
    # Checked in the command's body, not by argparse, so a wrong name is a one-line error.
    parser.add_argument("--format", required=True, help="torchscript or onnx")
    parser.add_argument(
        "--out",
        help="file to write (default: model.ts / model.onnx inside the bundle); "
        "<out>.json and <out>.README.txt are written beside it",
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset ({MIN_OPSET} or later)")
    args = parser.parse_args(argv)

    def export() -> int:
        if args.format not in FORMATS:
            raise ExportError(f"unknown format {args.format!r} (valid: {', '.join(FORMATS)})")
        bundle = load_bundle(args.bundle)
        out = Path(args.out) if args.out else default_output(args.bundle, args.format)
        result = export_bundle(bundle, args.format, out, args.opset)
        size = result.path.stat().st_size / 1024
        opset = f" opset {result.opset}" if result.opset is not None else ""
        print(
            f"wrote {result.path} ({result.format}{opset}, {bundle.classifier.params:,} params, "
            f"{size:,.0f} KiB)"
        )
        print(f"serving notes: {', '.join(str(p) for p in result.sidecars)}")
        ok = result.parity <= PARITY_ATOL
        print(
            f"parity vs eager fp32 on {result.n_inputs} random inputs (batches of "
            f"{' and '.join(map(str, PARITY_BATCHES))}): max abs diff {result.parity:.2e} "
            f"({'within' if ok else 'ABOVE'} {PARITY_ATOL:.0e})"
        )
        return 0 if ok else 1

    return run_command(export)


if __name__ == "__main__":
    raise SystemExit(main())
