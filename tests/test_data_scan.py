"""mgc.data.scan: bad files are moved (never deleted) with a reason, and a re-scan is a no-op."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgc.data.__main__ import main
from mgc.data.datasets import DatasetError, discover
from mgc.data.scan import REPORT_NAME, read_report, scan

SR = 22050


def _wave(seconds: float, sr: int = SR, kind: str = "tone", channels: int = 1) -> np.ndarray:
    n = int(seconds * sr)
    rng = np.random.default_rng(int(seconds * 1000) + channels)
    if kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(n) / sr)
    elif kind == "noise":
        x = rng.uniform(-0.5, 0.5, n)
    elif kind == "silence":
        x = np.zeros(n)
    else:
        raise ValueError(kind)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _write(path: Path, wave: np.ndarray, sr: int = SR, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, format=fmt)
    return path


# Expected outcome for every bad file of the fixture dataset.
BAD = {
    "blues/blues.00002.wav": "undecodable",
    "blues/blues.00003.wav": "empty",
    "classical/classical.00000.wav": "silent",
    "classical/classical.00001.wav": "too_short",
}
GOOD = {
    "blues/blues.00000.wav",
    "blues/blues.00001.flac",
    "classical/classical.00002.wav",
    "classical/classical.00003.au",
}


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    """Two genres: good tone/noise/stereo-44.1k/.au/.flac clips, and one of each kind of bad."""
    root = tmp_path / "ds"
    _write(root / "blues" / "blues.00000.wav", _wave(4.0))
    _write(root / "blues" / "blues.00001.flac", _wave(4.0, kind="noise"))
    corrupt = root / "blues" / "blues.00002.wav"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "blues" / "blues.00003.wav").write_bytes(b"")
    _write(root / "classical" / "classical.00000.wav", _wave(4.0, kind="silence"))
    _write(root / "classical" / "classical.00001.wav", _wave(1.0))
    _write(root / "classical" / "classical.00002.wav", _wave(4.0, sr=44100, channels=2), sr=44100)
    _write(root / "classical" / "classical.00003.au", _wave(4.0), fmt="AU")
    (root / "classical" / "notes.txt").write_text("not audio")
    return root


def _all_files(*folders: Path) -> dict[str, bytes]:
    """Name → bytes of every audio file under the folders (the report CSV excluded)."""
    out = {}
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file() and p.name != REPORT_NAME:
                    out[p.name] = p.read_bytes()
    return out


def test_scan_moves_exactly_the_bad_files_with_reasons(dirty: Path) -> None:
    before = _all_files(dirty)
    report = scan(dirty, progress=False)

    assert report.n_checked == 8
    assert report.n_ok == 4
    assert dict(report.bad) == BAD
    assert report.ignored == ["classical/notes.txt"]
    quarantine = dirty / ".quarantine"
    assert {Path(dst).relative_to(quarantine).as_posix() for _, dst in report.moved} == set(BAD)
    assert {f"{t.genre}/{Path(t.path).name}" for t in discover(dirty)} == GOOD
    assert (dirty / "classical" / "notes.txt").is_file()
    # Moved, not deleted or altered: the same bytes exist across root + quarantine.
    assert _all_files(dirty) == before


def test_report_csv_lists_file_reason_detail(dirty: Path) -> None:
    scan(dirty, progress=False)
    with (dirty / ".quarantine" / REPORT_NAME).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"]: r["reason"] for r in rows} == BAD
    detail = {r["file"]: r["detail"] for r in rows}
    assert detail["blues/blues.00003.wav"] == "0 bytes"
    assert detail["classical/classical.00001.wav"] == "1.00 s < 3 s"
    assert detail["classical/classical.00000.wav"] == "peak -inf dBFS < -60 dBFS"
    assert detail["blues/blues.00002.wav"].startswith("cannot decode")
    assert all(r["moved_to"] == r["file"] for r in rows)


def test_second_scan_changes_nothing_and_keeps_history(dirty: Path) -> None:
    scan(dirty, progress=False)
    quarantine = dirty / ".quarantine"
    report_before = (quarantine / REPORT_NAME).read_text()
    files_before = _all_files(dirty)

    again = scan(dirty, progress=False)
    assert (again.n_checked, again.n_ok, again.bad, again.moved) == (4, 4, [], [])
    assert (quarantine / REPORT_NAME).read_text() == report_before
    assert _all_files(dirty) == files_before


def test_new_bad_file_with_a_quarantined_name_gets_a_suffix(dirty: Path) -> None:
    scan(dirty, progress=False)
    quarantine = dirty / ".quarantine"
    first = (quarantine / "blues" / "blues.00003.wav").read_bytes()
    (dirty / "blues" / "blues.00003.wav").write_bytes(b"")  # the same empty file turns up again
    report = scan(dirty, progress=False)
    assert report.bad == [("blues/blues.00003.wav", "empty")]
    assert Path(report.moved[0][1]) == quarantine / "blues" / "blues.00003-1.wav"
    assert (quarantine / "blues" / "blues.00003.wav").read_bytes() == first
    rows = read_report(quarantine)
    assert len(rows) == len(BAD) + 1  # history kept, new row appended
    assert rows[-1]["moved_to"] == "blues/blues.00003-1.wav"


def test_custom_quarantine_and_thresholds(dirty: Path, tmp_path: Path) -> None:
    quarantine = tmp_path / "elsewhere"
    # A 0.5 s minimum keeps the 1 s clip; -400 dB makes digital silence the only silence.
    report = scan(dirty, min_seconds=0.5, silence_db=-400, quarantine=quarantine, progress=False)
    assert dict(report.bad) == {
        "blues/blues.00002.wav": "undecodable",
        "blues/blues.00003.wav": "empty",
        "classical/classical.00000.wav": "silent",
    }
    assert (quarantine / REPORT_NAME).is_file()
    assert not (dirty / ".quarantine").exists()


def test_hidden_and_private_entries_are_neither_tracks_nor_ignored(dirty: Path) -> None:
    (dirty / "blues" / ".DS_Store").write_bytes(b"finder")
    (dirty / "blues" / ".blues.00009.wav.77-0a1b2c3d.tmp.wav").write_bytes(b"half a copy")
    _write(dirty / "_drafts" / "draft.wav", _wave(4.0))
    report = scan(dirty, progress=False)
    assert report.n_checked == 8
    assert report.ignored == ["classical/notes.txt"]


def test_quiet_tone_is_silent_only_below_threshold(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write(root / "a" / "quiet.wav", _wave(4.0) * 10 ** (-70 / 20) / 0.3)  # peak -70 dBFS
    assert scan(root, silence_db=-80, progress=False).bad == []
    assert scan(root, silence_db=-60, progress=False).bad == [("a/quiet.wav", "silent")]


def test_visible_quarantine_inside_the_dataset_is_refused(dirty: Path) -> None:
    with pytest.raises(DatasetError, match="must be a hidden folder"):
        scan(dirty, quarantine=dirty / "quarantine", progress=False)
    with pytest.raises(DatasetError, match="must be a hidden folder"):
        scan(dirty, quarantine=dirty, progress=False)


def test_all_files_bad_then_rescan_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write(root / "a" / "x.wav", _wave(0.5))
    assert len(scan(root, progress=False).moved) == 1
    again = scan(root, progress=False)
    assert (again.n_checked, again.moved) == (0, [])


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        scan(tmp_path / "nope", progress=False)


def test_cli_scan_summary(dirty: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(dirty), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "checked 8, ok 4, moved 4 (empty 1, silent 1, too_short 1, undecodable 1)" in out
    assert "ignored 1 non-audio" in out
    assert main(["scan", str(dirty), "--quiet"]) == 0
    assert "checked 4, ok 4, moved 0\n" in capsys.readouterr().out
