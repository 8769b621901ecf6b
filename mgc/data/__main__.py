"""`python -m mgc.data {gtzan,download,scan,split}`: get GTZAN (from a copy or the internet),
quarantine bad audio, write a split file."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from mgc.core.cli import run_command
from mgc.data.datasets import Track, discover, genres_of, printable
from mgc.data.download import GTZAN_MIRRORS
from mgc.data.gtzan import DOWNLOAD, ensure_dataset, get_gtzan, is_missing
from mgc.data.scan import scan
from mgc.data.splits import (
    DEFAULT_RATIOS,
    PARTS,
    STRATIFIED,
    Split,
    SplitError,
    named_splits,
    resolve_split,
    stratified_split,
)


def _cmd_gtzan(args: argparse.Namespace) -> int:
    dest = Path(os.path.expanduser(os.path.expandvars(args.dest)))
    get_gtzan(args.source, dest, progress=not args.quiet, md5=args.md5, sha256=args.sha256)
    _print_dataset(dest)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    root = Path(os.path.expanduser(os.path.expandvars(args.out)))
    existed = not is_missing(root)
    ensure_dataset(root, progress=not args.quiet)
    if existed:
        print(f"{root}: already there, left as it is")
    _print_dataset(root)
    return 0


def _print_dataset(root: Path) -> None:
    tracks = discover(root)
    per_genre = Counter(t.genre for t in tracks)
    print(f"{root}: {len(tracks)} tracks, {len(per_genre)} genres")
    for genre in sorted(per_genre):
        print(f"  {genre:<12} {per_genre[genre]:>5}")


def _cmd_scan(args: argparse.Namespace) -> int:
    report = scan(
        args.root,
        sample_rate=args.sample_rate,
        min_seconds=args.min_seconds,
        silence_db=args.silence_db,
        quarantine=args.quarantine,
        progress=not args.quiet,
    )
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(report.reasons().items()))
    print(
        f"checked {report.n_checked}, ok {report.n_ok}, moved {len(report.moved)}"
        + (f" ({reasons})" if reasons else "")
    )
    for (rel, reason), (_, dst) in zip(report.bad, report.moved, strict=True):
        print(f"  {reason:<12} {printable(rel)} -> {printable(dst)}")
    for rel, detail in report.unreadable:
        print(f"  {'unreadable':<12} {printable(rel)}: {detail}, left in place")
    if report.ignored:
        print(f"ignored {len(report.ignored)} non-audio or duplicate file(s), left in place")
    if report.moved:
        print(f"report: {report.report_path}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser()
    tracks = discover(root)
    if args.named:
        # Written as restricted to the tracks present, so the file says what a run really used.
        split, _ = resolve_split(args.named, tracks, seed=None)
    else:
        split = stratified_split(tracks, ratios=tuple(args.ratios), seed=args.seed)
    out = Path(args.out).expanduser() if args.out else root / "split.json"
    text = split.to_json()
    if out.exists() and out.read_text() == text:
        print(f"{out}: unchanged")
    elif out.exists() and not args.force:
        raise SplitError(f"{out}: exists with a different split; pass --force to replace it")
    else:
        split.save(out)
        print(f"wrote {out}")
    _print_counts(split, tracks)
    return 0


def _print_counts(split: Split, tracks: list[Track]) -> None:
    genre_of = {t.track_id: t.genre for t in tracks}
    counts = {part: Counter(genre_of.get(tid, "?") for tid in split.parts[part]) for part in PARTS}
    seed = f", seed {split.seed}" if split.seed is not None else ""
    print(
        f"split {split.name}{seed}: "
        + ", ".join(f"{part} {len(split.parts[part])}" for part in PARTS)
    )
    print(f"  {'genre':<12}" + "".join(f"{part:>7}" for part in PARTS))
    for genre in genres_of(tracks):
        print(f"  {genre:<12}" + "".join(f"{counts[part][genre]:>7}" for part in PARTS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mgc.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gtzan", help="put GTZAN (or any folder-per-genre set) in <dest>/<genre>/")
    g.add_argument(
        "--source",
        default=DOWNLOAD,
        help="folder, archive (.tar.gz/.tgz/.tar/.zip) or http(s) URL; "
        f"'{DOWNLOAD}' (default) tries {', '.join(GTZAN_MIRRORS)}",
    )
    g.add_argument(
        "--dest",
        default=os.environ.get("MGC_DATA_ROOT", "data/gtzan"),
        help="dataset folder (default: $MGC_DATA_ROOT, else data/gtzan)",
    )
    g.add_argument(
        "--md5", help="expected md5 of the downloaded archive (replaces the published one)"
    )
    g.add_argument(
        "--sha256", help="expected sha256 of the downloaded archive (replaces the published one)"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=_cmd_gtzan)

    d = sub.add_parser(
        "download",
        help="download GTZAN into a missing dataset folder (checksummed, resumable); "
        "an existing folder is left as it is",
    )
    d.add_argument(
        "--out",
        default=os.environ.get("MGC_DATA_ROOT", "data/gtzan"),
        help="dataset folder (default: $MGC_DATA_ROOT, else data/gtzan); the archive is kept "
        "beside it",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_download)

    s = sub.add_parser("scan", help="move undecodable/empty/short/silent files to quarantine")
    s.add_argument("root", help="dataset folder (<root>/<genre>/<file>)")
    s.add_argument("--quarantine", help="default: <root>/.quarantine")
    s.add_argument("--min-seconds", type=float, default=3.0)
    s.add_argument("--silence-db", type=float, default=-60.0, help="peak below this is silent")
    s.add_argument("--sample-rate", type=int, default=22050)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_scan)

    p = sub.add_parser("split", help="write a split file (stratified by genre, or a named split)")
    p.add_argument("root", help="dataset folder")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ratios", type=float, nargs=3, default=list(DEFAULT_RATIOS), metavar=PARTS)
    p.add_argument("--out", help="split file (default: <root>/split.json)")
    p.add_argument(
        "--named",
        choices=named_splits(),
        help=f"a shipped split instead of {STRATIFIED!r}, limited to the tracks present",
    )
    p.add_argument("--force", action="store_true", help="replace an existing, different file")
    p.set_defaults(func=_cmd_split)
    return parser


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
