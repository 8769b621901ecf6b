"""mgc.data.splits and `python -m mgc.data split`: by-track splits, named split, split files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mgc.data.__main__ import main
from mgc.data.datasets import Track, discover
from mgc.data.splits import (
    PARTS,
    Split,
    SplitError,
    assign_parts,
    named_split,
    named_splits,
    resolve_split,
    stratified_split,
    subsample,
)

FF_COUNTS = {"train": 443, "valid": 197, "test": 290}


def make_tracks(counts: dict[str, int]) -> list[Track]:
    return [
        Track(f"{g}/{g}.{i:05d}", g, f"/nowhere/{g}/{g}.{i:05d}.wav")
        for g, n in counts.items()
        for i in range(n)
    ]


# GTZAN-like imbalance, as in the clips this project has (disco 20), plus tiny genres.
COUNTS = {"blues": 100, "disco": 20, "rock": 51, "reggae": 48, "tiny3": 3, "two": 2, "one": 1}


def per_genre(split: Split) -> dict[str, Counter[str]]:
    return {part: Counter(t.split("/")[0] for t in split.parts[part]) for part in PARTS}


def test_stratified_proportions_within_one_per_genre() -> None:
    split = stratified_split(make_tracks(COUNTS), seed=42)
    counts = per_genre(split)
    for genre, n in COUNTS.items():
        got = [counts[part][genre] for part in PARTS]
        assert sum(got) == n
        if n >= 4:
            for part, ratio, k in zip(PARTS, (0.7, 0.15, 0.15), got, strict=True):
                assert abs(k - n * ratio) <= 1, (genre, part, k)
                assert k >= 1, (genre, part)  # every genre is in every part
        elif n == 3:
            assert got == [1, 1, 1]  # one each, so macro-F1 still sees the genre
        else:
            assert got == [n, 0, 0]  # too few to evaluate on: all in train
    assert [counts[p]["blues"] for p in PARTS] == [70, 15, 15]


def test_stratified_covers_every_track_once_no_overlap() -> None:
    tracks = make_tracks(COUNTS)
    split = stratified_split(tracks, seed=7)
    ids = [t for part in PARTS for t in split.parts[part]]
    assert sorted(ids) == sorted(t.track_id for t in tracks)
    assert len(ids) == len(set(ids))


def test_stratified_is_deterministic_and_seed_dependent() -> None:
    tracks = make_tracks(COUNTS)
    a = stratified_split(tracks, seed=42)
    assert stratified_split(list(reversed(tracks)), seed=42).parts == a.parts
    assert stratified_split(tracks, seed=43).parts["test"] != a.parts["test"]


def test_stratified_small_dataset_and_custom_ratios() -> None:
    # 10 genres × 5 tracks: one global stratified sklearn split would raise here.
    tracks = make_tracks({f"g{i}": 5 for i in range(10)})
    split = stratified_split(tracks, seed=0)
    assert split.counts() == {"train": 30, "valid": 10, "test": 10}
    no_valid = stratified_split(tracks, ratios=(0.8, 0.0, 0.2), seed=0)
    assert no_valid.counts() == {"train": 40, "valid": 0, "test": 10}
    with pytest.raises(SplitError, match="summing to 1"):
        stratified_split(tracks, ratios=(0.7, 0.2, 0.2))


def test_split_json_round_trip(tmp_path: Path) -> None:
    split = stratified_split(make_tracks(COUNTS), seed=5)
    path = split.save(tmp_path / "s" / "split.json")
    raw = json.loads(path.read_text())
    assert {"name", "seed", "ratios", "created_by", "parts"} <= set(raw)
    assert raw["seed"] == 5 and raw["ratios"] == [0.7, 0.15, 0.15]
    loaded = Split.load(path)
    assert loaded == split


def test_track_in_two_parts_is_a_hard_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"name": "x", "parts": {"train": ["a/1", "a/2"], "valid": [], "test": ["a/2"]}})
    )
    with pytest.raises(SplitError, match="track a/2 is in both train and test"):
        Split.load(path)
    path.write_text(json.dumps({"parts": {"train": []}}))
    with pytest.raises(SplitError, match="parts.valid must be a list"):
        Split.load(path)
    path.write_text("{not json")
    with pytest.raises(SplitError, match="not valid JSON"):
        Split.load(path)


def test_fault_filtered_named_split() -> None:
    assert "fault_filtered" in named_splits()
    split = named_split("fault_filtered")
    assert split.counts() == FF_COUNTS
    ids = [t for part in PARTS for t in split.parts[part]]
    assert len(set(ids)) == 930
    assert all(t.count("/") == 1 and t.split("/")[1].startswith(t.split("/")[0]) for t in ids)
    assert "blues/blues.00012" in split.parts["test"]  # first line of test_filtered.txt
    assert "Kereliuk" in split.source and "jongpillee/music_dataset_split" in split.source
    with pytest.raises(SplitError, match="no named split 'nope'"):
        named_split("nope")


def test_resolve_against_partial_dataset_reports_missing(caplog: pytest.LogCaptureFixture) -> None:
    full = named_split("fault_filtered")
    # Keep every other train track, the first 100 valid and all test tracks.
    keep = full.parts["train"][::2] + full.parts["valid"][:100] + full.parts["test"]
    extra = ["blues/blues.00999"]  # a dataset track the split does not name
    tracks = [Track(t, t.split("/")[0], f"/x/{t}.ogg") for t in keep + extra]
    with caplog.at_level(logging.WARNING, logger="mgc.data.splits"):
        split, missing = resolve_split("fault_filtered", tracks, seed=0)
    assert missing == {"train": 221, "valid": 97, "test": 0}
    assert split.counts() == {"train": 222, "valid": 100, "test": 290}
    assert (
        "split fault_filtered: 221/443 train, 97/197 valid, 0/290 test tracks not in the dataset; "
        "using the 222/100/290 present" in caplog.text
    )
    parts = assign_parts(split, tracks)
    assert {p: len(v) for p, v in parts.items()} == split.counts()
    assert all(isinstance(t, Track) for t in parts["train"])


def test_resolve_stratified_and_path_and_errors(tmp_path: Path) -> None:
    tracks = make_tracks(COUNTS)
    split, missing = resolve_split("stratified", tracks, seed=42)
    assert missing == {"train": 0, "valid": 0, "test": 0}
    assert split.parts == stratified_split(tracks, seed=42).parts
    path = split.save(tmp_path / "mine.json")
    again, _ = resolve_split(str(path), tracks, seed=0)
    assert again.parts == split.parts
    with pytest.raises(SplitError, match="not 'stratified', a named split"):
        resolve_split(str(tmp_path / "missing.json"), tracks, seed=0)
    # A split none of whose test tracks exist means the wrong dataset, not a partial one.
    with pytest.raises(SplitError, match="none of its 443 train tracks"):
        resolve_split("fault_filtered", make_tracks({"polka": 10}), seed=0)


def test_subsample_is_stratified_nested_and_seeded() -> None:
    tracks = make_tracks({"a": 100, "b": 20, "c": 1})
    quarter = subsample(tracks, 0.25, seed=3)
    half = subsample(tracks, 0.5, seed=3)
    assert Counter(t.genre for t in quarter) == {"a": 25, "b": 5, "c": 1}
    assert Counter(t.genre for t in half) == {"a": 50, "b": 10, "c": 1}
    assert set(quarter) <= set(half)
    assert subsample(tracks, 0.25, seed=3) == quarter
    assert subsample(tracks, 0.25, seed=4) != quarter
    assert subsample(tracks, 1.0, seed=3) == tracks
    with pytest.raises(SplitError, match=r"in \(0, 1\]"):
        subsample(tracks, 0.0, seed=3)


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def placeholder_dataset(tmp_path: Path) -> Path:
    """Empty files with audio names: splitting only needs the names."""
    root = tmp_path / "ds"
    for genre, n in {"blues": 20, "jazz": 10, "pop": 7}.items():
        (root / genre).mkdir(parents=True)
        for i in range(n):
            (root / genre / f"{genre}.{i:05d}.wav").write_bytes(b"")
    return root


def test_cli_split_writes_and_refuses_to_overwrite(
    placeholder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = placeholder_dataset
    assert main(["split", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {root / 'split.json'}" in out
    assert "split stratified, seed 42: train 25, valid 6, test 6" in out
    assert "  blues            14      3      3" in out
    saved = Split.load(root / "split.json")
    assert saved.parts == stratified_split(discover(root), seed=42).parts

    assert main(["split", str(root)]) == 0  # same split again: nothing to refuse
    assert "unchanged" in capsys.readouterr().out

    assert main(["split", str(root), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert Split.load(root / "split.json").parts == saved.parts

    assert main(["split", str(root), "--seed", "1", "--force"]) == 0
    assert Split.load(root / "split.json").seed == 1


def test_cli_split_named_and_custom_out(
    placeholder_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "splits" / "ff.json"
    assert (
        main(["split", str(placeholder_dataset), "--named", "fault_filtered", "--out", str(out)])
        == 0
    )
    split = Split.load(out)
    assert split.name == "fault_filtered" and "Kereliuk" in split.source
    assert "not in the dataset" in split.note
    assert sum(split.counts().values()) > 0


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["split", str(tmp_path / "nope")],
        ["scan", str(tmp_path / "nope")],
        ["gtzan", "--source", str(tmp_path / "nope"), "--dest", str(tmp_path / "d")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_cli_missing_folder_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "mgc.data", "split", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: dataset folder not found"


# ---------------------------------------------------------------------------------------------
# Real GTZAN


def _gtzan_dir() -> Path:
    env = os.environ.get("MGC_GTZAN_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"


@pytest.mark.integration
def test_fault_filtered_against_real_gtzan_clips() -> None:
    root = _gtzan_dir()
    if not root.is_dir():
        pytest.skip(f"real GTZAN clips not found at {root}: set MGC_GTZAN_DIR")
    tracks = discover(root)
    split, missing = resolve_split("fault_filtered", tracks, seed=0)
    assert split.counts() == {"train": 367, "valid": 145, "test": 238}
    assert missing == {"train": 76, "valid": 52, "test": 52}
    parts = assign_parts(split, tracks)
    assert all(Path(t.path).is_file() for part in parts.values() for t in part)
