"""A dataset full of hostile files through scan, prepare, train and predict: no traceback, every
file accounted for (used, or named with its reason), bad files never stop the batch, the exit
statuses are the documented ones, and the dataset folder is left byte for byte as it was (scan,
whose job is to move bad files, runs on a copy and must only have moved those, unchanged).

One module-scoped fixture builds the folder and runs each command once in a subprocess, as a user
would; the tests then read what each run printed and left behind.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone, write_audio

from mgc.data.scan import REPORT_NAME, check_track, read_report, scan

pytestmark = [
    pytest.mark.slow,  # trains, predicts over a 10-minute file, and starts Ray once
    pytest.mark.skipif(os.name != "posix", reason="symbolic links, modes and byte file names"),
]

GENRES = {"blues": 220.0, "metal": 880.0, "pop": 3520.0}
# Ten minutes (9.6 MB) rather than an hour (58 MB): the point here is a file far longer than the
# rest going through every stage a block at a time (about 37 decoder reads of 2^17 frames at
# 8 kHz, many predict segments), which ten minutes does at a sixth of the cost; prepare alone
# took over a minute for the hour on a busy two-core machine. An hour in bounded memory is what
# tests/test_predict.py::test_an_hour_long_file_in_bounded_memory checks.
LONG_MINUTES = 10
TRUNCATED_FROM_S = 10.0  # the truncated Ogg and MP3 are this long before losing half their bytes
ODD_NAME = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes: not UTF-8, held as a surrogate in a str

# rel path -> (scan, prepare, predict, words every line about it carries).
#   scan:    ok | empty | undecodable | too_short (moved to quarantine) | unreadable (left, named)
#            | ignored (named, left) | inside (in an ignored sub-folder) | hidden (never named)
#   prepare: used | skipped | ignored | inside | hidden
#   predict: ok | padded | error | none (a folder: nothing to classify) | hidden
GOOD = ("ok", "used", "ok", "")
CASES: dict[str, tuple[str, str, str, str]] = {
    **{f"{g}/{g}.{i:05d}.wav": GOOD for g in GENRES for i in range(4)},
    "blues/zero.wav": ("empty", "skipped", "error", "0 bytes"),
    "metal/trunc.ogg": GOOD,  # decoded up to the cut
    "pop/trunc.mp3": GOOD,
    "blues/random.mp3": ("undecodable", "skipped", "error", "cannot decode"),
    "metal/text.wav": ("undecodable", "skipped", "error", "cannot decode"),
    "blues/nan.wav": ("undecodable", "skipped", "error", "not finite"),
    "pop/blip.wav": ("too_short", "used", "padded", "0.05 s"),
    "blues/u8.wav": GOOD,
    "metal/f32.wav": GOOD,
    "pop/multi.wav": GOOD,  # 96 kHz, 8 channels
    "blues/long.wav": GOOD,
    f"metal/{ODD_NAME}": GOOD,
    "pop/locked.wav": ("unreadable", "skipped", "error", "cannot read"),
    "blues/loop-a.wav": ("ignored", "ignored", "error", "broken symbolic link"),
    "blues/loop-b.wav": ("ignored", "ignored", "error", "broken symbolic link"),
    "jazz/": ("ignored", "ignored", "none", "no audio files"),
    "pop/live/": ("ignored", "ignored", "none", "sub-folder"),
    "pop/live/pop.live.wav": ("inside", "inside", "ok", ""),
    "__MACOSX/blues/._blues.00000.wav": ("hidden", "hidden", "hidden", ""),
    ".DS_Store": ("hidden", "hidden", "hidden", ""),
    "blues/.DS_Store": ("hidden", "hidden", "hidden", ""),
    "metal/._metal.00000.wav": ("hidden", "hidden", "hidden", ""),
    ".hidden/blues/hidden-track.wav": ("hidden", "hidden", "hidden", ""),
}
HIDDEN_MARKS = ("__MACOSX", ".DS_Store", "._blues", "._metal", "hidden-track")


# ---------------------------------------------------------------------------------------------
# Reading a file is denied: chmod 000, and for root (whom permissions do not stop) a subprocess
# without the two capabilities that let root read anything.


@functools.cache
def deny_prefix() -> list[str] | None:
    """Command prefix under which a chmod-000 file cannot be read; None when that cannot be had
    (root on a machine without setpriv, or where dropping capabilities is not allowed)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    probe = "import sys\ntry: open(sys.argv[1], 'rb')\nexcept PermissionError: print('denied')"
    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "probe"
        locked.write_bytes(b"x")
        locked.chmod(0)
        try:
            out = subprocess.run(
                [*prefix, sys.executable, "-c", probe, str(locked)],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except OSError:
            return None
    return prefix if out.returncode == 0 and out.stdout.strip() == "denied" else None


NO_DENY = "running as root without a way to drop the capabilities that let root read anything"


def _write_locked(path: Path) -> None:
    write_audio(path, tone(3700, 4.0))
    path.chmod(0)


# ---------------------------------------------------------------------------------------------
# The folder


def build(root: Path) -> dict[str, tuple[str, str, str, str]]:
    """Write the hostile dataset under `root` (the same bytes every time); returns its cases."""
    cases = dict(CASES)
    if deny_prefix() is None:  # then the case is left out (see NO_DENY)
        del cases["pop/locked.wav"]
    for g, base in GENRES.items():
        for i in range(4):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(base * (1 + 0.05 * i), 4.0, seed=i))
    blues, metal, pop = (root / g for g in GENRES)
    (blues / "zero.wav").write_bytes(b"")
    for path, fmt, sub in (
        (metal / "trunc.ogg", "OGG", "VORBIS"),
        (pop / "trunc.mp3", "MP3", None),
    ):
        sf.write(path, tone(900, TRUNCATED_FROM_S), SR, format=fmt, subtype=sub)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    (blues / "random.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    (metal / "text.wav").write_text("RIFF? no: a text file with a .wav name\n")
    nan = tone(220, 4.0)
    nan[1000], nan[2000] = np.nan, np.inf
    write_audio(blues / "nan.wav", nan, subtype="FLOAT")
    write_audio(pop / "blip.wav", tone(3520, 0.05))
    write_audio(blues / "u8.wav", tone(230, 4.0), subtype="PCM_U8")
    write_audio(metal / "f32.wav", tone(920, 4.0), subtype="FLOAT")
    write_audio(pop / "multi.wav", np.stack([tone(3600, 4.0, sr=96000)] * 8, axis=1), sr=96000)
    minute = tone(240, 60.0, sr=8000)
    with sf.SoundFile(blues / "long.wav", "w", 8000, 1, subtype="PCM_16") as fh:
        for _ in range(LONG_MINUTES):
            fh.write(minute)
    sf.write(os.fsencode(metal / ODD_NAME), tone(940, 4.0), SR)  # bytes: soundfile wants UTF-8
    if "pop/locked.wav" in cases:
        _write_locked(pop / "locked.wav")
    os.symlink("loop-b.wav", blues / "loop-a.wav")
    os.symlink("loop-a.wav", blues / "loop-b.wav")
    (root / "jazz").mkdir()
    write_audio(pop / "live" / "pop.live.wav", tone(3500, 4.0))
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
    (root / "__MACOSX" / "blues").mkdir(parents=True)
    (root / "__MACOSX" / "blues" / "._blues.00000.wav").write_bytes(apple_double)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (blues / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (metal / "._metal.00000.wav").write_bytes(apple_double)
    write_audio(root / ".hidden" / "blues" / "hidden-track.wav", tone(220, 4.0))
    return cases


def snapshot(root: Path) -> dict[str, tuple]:
    """rel path -> (mode, size, mtime, sha256 or link target) of every entry under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                try:
                    content = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:  # the locked file, when not root: mode/size/mtime say it
                    content = "unreadable"
            else:
                content = None
            out[path.relative_to(root).as_posix()] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                content,
            )
    return out


def cli(*args: str, deny: bool = False, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m ARGS` as a user runs it: stdout encoded strictly as UTF-8 (a desktop's UTF-8
    locale; a C.UTF-8 one would quietly escape odd names), under deny_prefix() where asked."""
    prefix = (deny_prefix() or []) if deny else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "TQDM_DISABLE": "1"},
        cwd=cwd,
        timeout=900,
    )


@dataclass
class Runs:
    root: Path
    cases: dict[str, tuple[str, str, str, str]]
    before: dict[str, tuple]
    after: dict[str, tuple]
    scan_root: Path
    scan_before: dict[str, tuple]
    scan_after: dict[str, tuple]
    cache: Path
    run_dir: Path
    scan: subprocess.CompletedProcess
    prepare: subprocess.CompletedProcess
    train: subprocess.CompletedProcess
    predict: subprocess.CompletedProcess
    predictions: list[dict]

    def rels(self, column: int, *values: str) -> list[str]:
        return [rel for rel, case in self.cases.items() if case[column] in values]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    tmp = tmp_path_factory.mktemp("hostile")
    root, scan_root = tmp / "ds", tmp / "scan-ds"
    cases = build(root)
    build(scan_root)
    before, scan_before = snapshot(root), snapshot(scan_root)
    cache, run_dir = tmp / "cache", tmp / "run"
    data = [f"data.root={root}", f"cache.dir={cache}"]
    scan_proc = cli("mgc.data", "scan", str(scan_root), "--quiet", deny=True, cwd=tmp)
    prepare_proc = cli("mgc.prepare", *data, "--no-ray", deny=True, cwd=tmp)
    train_proc = cli(
        "mgc.train",
        *data,
        "chunks.window_s=1.0",
        "model.width=8",
        "train.epochs=1",
        "train.windows_per_track=4",
        "train.threads=1",
        "train.device=cpu",
        f"run.out_dir={tmp / 'runs'}",
        "--run-dir",
        str(run_dir),
        deny=True,
        cwd=tmp,
    )
    out = tmp / "predictions.json"
    predict_proc = cli(
        "mgc.predict", str(root), "--format", "json", "--out", str(out), "--device", "cpu",
        deny=True,
        cwd=tmp,
    )  # fmt: skip
    predictions = json.loads(out.read_text()) if out.is_file() else []
    return Runs(
        root=root,
        cases=cases,
        before=before,
        after=snapshot(root),
        scan_root=scan_root,
        scan_before=scan_before,
        scan_after=snapshot(scan_root),
        cache=cache,
        run_dir=run_dir,
        scan=scan_proc,
        prepare=prepare_proc,
        train=train_proc,
        predict=predict_proc,
        predictions=predictions,
    )


def lines_about(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def assert_hidden_unnamed(text: str) -> None:
    for mark in HIDDEN_MARKS:
        assert mark not in text, f"{mark} is hidden, yet named"


# ---------------------------------------------------------------------------------------------
# The shared folder


def test_dataset_folder_is_left_byte_for_byte(runs: Runs):
    assert runs.after == runs.before


def test_scan_names_every_bad_file_and_moves_only_bad_audio(runs: Runs):
    proc = runs.scan
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    said = proc.stdout + proc.stderr
    moved = runs.rels(0, "empty", "undecodable", "too_short")
    tracks = runs.rels(0, "ok", "empty", "undecodable", "too_short", "unreadable")
    n_ok = len(runs.rels(0, "ok"))
    assert f"checked {len(tracks)}, ok {n_ok}, moved {len(moved)} (" in proc.stdout
    for rel, (outcome, _, _, why) in runs.cases.items():
        about = lines_about(said, rel)
        if outcome in ("ok", "inside", "hidden"):
            assert not about, f"{rel}: usable or hidden, yet reported: {about}"
        elif outcome == "unreadable" or outcome == "ignored":
            assert [line for line in about if why in line and "left in place" in line], rel
        else:
            assert [line for line in lines_about(proc.stdout, rel) if outcome in line], rel
            assert [line for line in about if why in line], rel
    assert_hidden_unnamed(said)

    # The report lists exactly the moved files; each is in quarantine with the same bytes.
    quarantine = runs.scan_root / ".quarantine"
    assert sorted(r["file"] for r in read_report(quarantine)) == sorted(moved)
    for rel, entry in runs.scan_before.items():
        if rel in moved:
            assert runs.scan_after[f".quarantine/{rel}"] == entry, rel
            assert rel not in runs.scan_after
        elif not stat.S_ISDIR(entry[0]):  # folders that lost a file have a new mtime
            assert runs.scan_after[rel] == entry, rel


def manifest_of(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("manifest: ")]
    raw = json.loads(Path(line.removeprefix("manifest: ")).read_text())
    return {e["path"]: e for e in raw["entries"]}


def test_prepare_names_every_skipped_and_ignored_entry(runs: Runs):
    proc = runs.prepare
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    used, skipped = runs.rels(1, "used"), runs.rels(1, "skipped")
    total = len(used) + len(skipped)
    assert f"prepared {len(used)}/{total} tracks: {len(used)} computed" in proc.stdout
    manifest = manifest_of(proc)
    assert len(manifest) == total
    out = proc.stdout
    for rel, (_, outcome, _, why) in runs.cases.items():
        about = lines_about(out, f"{runs.root}/{rel}")
        if outcome == "used":
            entry = manifest[str(runs.root / rel)]
            assert entry["error"] is None and entry["n_frames"] > 0 and not about, rel
        elif outcome == "skipped":
            assert manifest[str(runs.root / rel)]["error"], rel
            assert len(about) == 1 and about[0].startswith("  skipped ") and why in about[0], rel
        elif outcome == "ignored":
            assert len(about) == 1 and about[0].startswith("  ignored ") and why in about[0], rel
    assert_hidden_unnamed(proc.stdout + proc.stderr)

    # A truncated file gives what it holds, not its header's length padded with whatever was
    # in memory (SoundFile.blocks() did that for the cut MP3).
    frames_per_s = SR / 512
    for rel in ("metal/trunc.ogg", "pop/trunc.mp3"):
        frames = manifest[str(runs.root / rel)]["n_frames"]
        assert 3 * frames_per_s < frames < 0.6 * TRUNCATED_FROM_S * frames_per_s, (rel, frames)
    long_frames = manifest[str(runs.root / "blues/long.wav")]["n_frames"]
    assert long_frames == pytest.approx(LONG_MINUTES * 60 * frames_per_s, abs=2)


def test_prepare_through_ray_workers_gives_the_same_entries(runs: Runs, ray_local, tmp_path):
    """The Ray path (the command's default) on the same folder: its arrays are already stored, so
    workers hash every file and decode only the bad ones, and return the same entries. Run in
    this process on the test session's own Ray: `python -m mgc.prepare` would start a Ray with
    a dashboard on port 8265, which whatever else uses that port on a shared machine blocks."""
    from mgc.core.config import load_config
    from mgc.data.prepare import prepare

    cache = tmp_path / "cache"
    shutil.copytree(runs.cache, cache)
    for manifest in cache.rglob("manifest-*.json"):
        manifest.unlink()
    cfg = load_config(None, [f"data.root={runs.root}", f"cache.dir={cache}", "cache.batch_size=4"])
    result = prepare(cfg, use_ray=True)
    by_path = {e.path: e for e in result.entries}
    # This process may read the locked file (root, capabilities kept); the rest must match.
    locked = str(runs.root / "pop/locked.wav")
    expected = {p: e for p, e in manifest_of(runs.prepare).items() if p != locked}
    assert result.computed == 0 or (locked in by_path and result.computed == 1)
    for path, entry in expected.items():
        got = by_path[path]
        assert (got.error, got.n_frames, got.content) == (
            entry["error"],
            entry["n_frames"],
            entry["content"],
        ), path
    assert sorted(p for p, _ in result.ignored) == sorted(
        os.path.join(runs.root, rel) for rel in runs.rels(1, "ignored")
    )


def test_train_uses_what_is_left_and_records_what_was_skipped(runs: Runs):
    proc = runs.train
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    metrics = json.loads((runs.run_dir / "metrics.json").read_text())
    skipped = metrics["skipped_files"]
    expected = runs.rels(1, "skipped")
    assert len(skipped) == len(expected)
    for rel in expected:
        assert [s for s in skipped if s.startswith(f"{runs.root}/{rel}: ")], rel
    assert sum(metrics["n_tracks"].values()) == len(runs.rels(1, "used"))
    assert (runs.run_dir / "bundle" / "model.pt").is_file()


def test_predict_gives_every_file_a_row(runs: Runs):
    proc = runs.predict
    assert proc.returncode == 1, proc.stderr[-3000:]  # documented: 1 when some file failed
    assert_no_traceback(proc)
    rows = {r["file"]: r for r in runs.predictions}
    files = [rel for rel, case in runs.cases.items() if case[2] not in ("none", "hidden")]
    assert sorted(rows) == sorted(str(runs.root / rel) for rel in files)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(runs.rels(2, "error"))
    for rel in files:
        _, _, outcome, why = runs.cases[rel]
        row = rows[str(runs.root / rel)]
        if outcome == "error":
            assert why in row["error"], (rel, row)
            assert len(lines_about("\n".join(errors), f"{runs.root}/{rel}")) == 1, rel
        else:
            assert "error" not in row and len(row["top_k"]) == 3, (rel, row)
            assert ("note" in row and "padded" in row["note"]) == (outcome == "padded"), rel
    duration = {rel: rows[str(runs.root / rel)].get("duration_s") for rel in files}
    assert duration["blues/long.wav"] == pytest.approx(LONG_MINUTES * 60, abs=0.01)
    assert duration["pop/multi.wav"] == pytest.approx(4.0, abs=0.01)
    for rel in ("metal/trunc.ogg", "pop/trunc.mp3"):
        assert 3.0 < duration[rel] < 0.6 * TRUNCATED_FROM_S, (rel, duration[rel])
    assert_hidden_unnamed(proc.stdout + proc.stderr + json.dumps(runs.predictions))


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_predict_text_output_shows_a_non_utf8_name(runs: Runs, fmt: str, tmp_path):
    odd = runs.root / "metal" / ODD_NAME
    proc = cli(
        "mgc.predict", str(odd), str(runs.root / "blues/zero.wav"), "--format", fmt,
        "--device", "cpu",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    shown = f"{runs.root}/metal/caf\\xe9.wav"
    if fmt == "csv":
        table = list(csv.DictReader(io.StringIO(proc.stdout)))
        assert [r["file"] for r in table] == [shown, f"{runs.root}/blues/zero.wav"]
        assert table[0]["top_label"] and "0 bytes" in table[1]["error"]
    else:
        assert shown in proc.stdout and "error: empty file" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Cases that need a folder of their own


def test_scan_checks_a_long_file_in_blocks(runs: Runs):
    """Decoded whole, ten minutes at 22.05 kHz is 53 MB of float32 (an hour, 318 MB); the scan
    only needs the length and the peak, so it holds a few seconds at a time."""
    decoded_bytes = LONG_MINUTES * 60 * SR * 4
    tracemalloc.start()
    try:
        assert check_track(runs.root / "blues/long.wav", SR, 3.0, -60.0) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < decoded_bytes / 4, f"peak {peak / 1e6:.0f} MB"


def test_scan_report_keeps_a_non_utf8_name(tmp_path: Path):
    root = tmp_path / "ds"
    for i in range(2):
        write_audio(root / "a" / f"a{i}.wav", tone(440, 4.0, seed=i))
    odd = root / "a" / os.fsdecode(b"bad\xff.wav")
    odd.write_text("not audio")
    plain = tmp_path / "bad.wav"
    plain.write_text("not audio")
    # The name plays no part in the verdict (libsndfile gets the name's own bytes).
    assert check_track(odd, SR, 3.0, -60.0) == check_track(plain, SR, 3.0, -60.0)
    report = scan(root, progress=False)
    assert report.bad == [(f"a/{odd.name}", "undecodable")]
    rows = read_report(root / ".quarantine")
    assert [r["file"] for r in rows] == [f"a/{odd.name}"]  # read back as the same name
    assert (root / ".quarantine" / "a" / odd.name).read_text() == "not audio"
    again = scan(root, progress=False)
    assert (again.n_checked, again.moved) == (2, [])
    assert (root / ".quarantine" / REPORT_NAME).read_bytes().count(b"bad\xff.wav") == 2


def test_an_unreadable_file_is_reported_until_it_can_be_read(tmp_path: Path):
    """prepare keeps bad files' verdicts until they change; a file it could not read is looked
    at again, since mending its permissions changes neither its size nor its mtime."""
    if deny_prefix() is None:
        pytest.skip(NO_DENY)
    root = tmp_path / "ds"
    for g in ("a", "b"):
        for i in range(2):
            write_audio(root / g / f"{g}{i}.wav", tone(300 * (1 + i), 2.0, seed=i))
    locked = root / "a" / "locked.wav"
    _write_locked(locked)
    args = ("mgc.prepare", f"data.root={root}", f"cache.dir={tmp_path / 'cache'}", "--no-ray")
    first = cli(*args, deny=True, cwd=tmp_path)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-3000:]
    assert f"  skipped {locked}: cannot read" in first.stdout
    again = cli(*args, deny=True, cwd=tmp_path)
    assert "0 computed, 4 from cache, 1 skipped" in again.stdout
    if os.geteuid() != 0:
        locked.chmod(0o644)  # root reads it as it is once the capabilities are kept
    mended = cli(*args, cwd=tmp_path)
    assert "prepared 5/5 tracks: 1 computed, 4 from cache, 0 skipped" in mended.stdout


def test_a_bad_non_utf8_name_is_reported_readably(ray_local, tmp_path: Path):
    """The skipped line names the file with its odd byte as `\\xff`, from Ray workers (whose
    results cross Arrow, UTF-8 only) and from the command alike."""
    from mgc.core.config import load_config
    from mgc.data.prepare import prepare

    root = tmp_path / "ds"
    for g in ("a", "b"):
        write_audio(root / g / f"{g}0.wav", tone(440, 2.0))
    (root / "b" / os.fsdecode(b"bad\xff.wav")).write_text("not audio")
    shown = f"{root}/b/bad\\xff.wav: cannot decode"
    cfg = load_config(None, [f"data.root={root}", f"cache.dir={tmp_path / 'ray-cache'}"])
    (bad,) = prepare(cfg, use_ray=True).bad
    assert bad.error.startswith(shown)
    args = ("mgc.prepare", f"data.root={root}", f"cache.dir={tmp_path / 'cache'}", "--no-ray")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"  skipped {shown}" in proc.stdout
