import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_audio

from mgc.core.audio import load_audio
from mgc.core.config import load_config
from mgc.data.cache import FeatureStore, stat_entry
from mgc.data.datasets import discover
from mgc.data.prepare import features_frontend, files_per_task, prepare, process_file
from mgc.features.transforms import LogMel, logmel_numpy
from mgc.prepare import main


def cfg_for(root: Path, cache: str, *extra: str):
    return load_config(
        None, [f"data.root={root}", f"cache.dir={cache}", "cache.batch_size=2", *extra]
    )


@pytest.fixture
def messy_dataset(synth_dataset: Path) -> Path:
    """The synthetic dataset plus a corrupt, an empty and a stereo 44.1 kHz file."""
    (synth_dataset / "pop" / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (synth_dataset / "pop" / "empty.wav").write_bytes(b"")
    stereo = np.stack([tone(300, 4.0, sr=44100)] * 2, axis=1)
    write_audio(synth_dataset / "metal" / "stereo.flac", stereo, sr=44100)
    (synth_dataset / "metal" / "notes.txt").write_text("not audio")
    return synth_dataset


def test_cold_warm_changed_params(ray_local, messy_dataset: Path, tmp_path: Path):
    cache = str(tmp_path / "cache")
    cfg = cfg_for(messy_dataset, cache)
    cold = prepare(cfg)
    assert len(cold.entries) == 15  # 12 tones + corrupt + empty + stereo; the .txt is not audio
    assert cold.computed == 13 and cold.failed == 2
    reasons = {Path(e.path).name: e.error for e in cold.bad}
    assert "empty" in reasons["empty.wav"] and "cannot decode" in reasons["corrupt.wav"]
    # Stored arrays are exactly the log-mel of the decoded file.
    store = FeatureStore(cache, cfg.features)
    entry = next(e for e in cold.entries if e.track_id == "blues/blues.00001")
    expected = logmel_numpy(load_audio(entry.path, 22050), LogMel())
    np.testing.assert_allclose(store.load(entry.content), expected, atol=1e-4)
    assert entry.n_frames == expected.shape[1]

    warm = prepare(cfg)
    assert warm.computed == 0 and warm.ray_seconds == 0.0
    assert [e.content for e in warm.ok] == [e.content for e in cold.ok]

    changed = prepare(cfg_for(messy_dataset, cache, "features.n_mels=64"))
    assert changed.computed == 13
    assert (
        FeatureStore(
            cache, changed_features := load_config(None, ["features.n_mels=64"]).features
        ).key
        != store.key
    )
    assert store.load(entry.content).shape[0] == 128
    assert FeatureStore(cache, changed_features).load(entry.content).shape[0] == 64


def test_resume_after_interruption_computes_only_the_rest(
    ray_local, synth_dataset: Path, tmp_path: Path
):
    cache = str(tmp_path / "cache")
    cfg = cfg_for(synth_dataset, cache)
    store, frontend = FeatureStore(cache, cfg.features), features_frontend(cfg.features)
    tracks = discover(synth_dataset)
    # An earlier run got through five files before it was stopped (no manifest written).
    for t in tracks[:5]:
        process_file(stat_entry(t.track_id, t.genre, t.path), store, frontend)
    result = prepare(cfg)
    assert result.computed == len(tracks) - 5 and result.reused == 5


def test_changed_file_is_recomputed_and_renamed_file_reused(
    ray_local, synth_dataset: Path, tmp_path: Path
):
    cache = str(tmp_path / "cache")
    cfg = cfg_for(synth_dataset, cache)
    prepare(cfg)
    write_audio(synth_dataset / "blues" / "blues.00000.wav", tone(100, 4.0))
    (synth_dataset / "pop" / "pop.00003.wav").rename(synth_dataset / "pop" / "pop.00099.wav")
    again = prepare(cfg)
    assert again.computed == 1  # the rename has the same content, so it is reused


def test_cache_accepts_a_uri(ray_local, synth_dataset: Path, tmp_path: Path):
    uri = f"file://{tmp_path / 'remote-cache'}"
    result = prepare(cfg_for(synth_dataset, uri))
    assert result.computed == 12 and (tmp_path / "remote-cache").is_dir()
    assert prepare(cfg_for(synth_dataset, uri)).computed == 0


def test_cli_reports_and_never_tracebacks(synth_dataset: Path, tmp_path: Path, capsys):
    assert main([f"data.root={synth_dataset}", f"cache.dir={tmp_path / 'c'}", "--no-ray"]) == 0
    out = capsys.readouterr().out
    assert "prepared 12/12 tracks: 12 computed" in out
    assert main([f"data.root={tmp_path / 'nowhere'}", f"cache.dir={tmp_path / 'c'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert main(["train.lrr=1"]) == 2
    assert "did you mean train.lr" in capsys.readouterr().err


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory tunes glibc's allocator; this platform has another",
)
def test_workers_keep_freed_buffers_for_the_next_track():
    # A clip-sized buffer goes back to the OS when freed by default (and is page-faulted in
    # again for the next clip); after keep_freed_memory() the process keeps it.
    probe = (
        "import os, sys, numpy as np\n"
        "from mgc.data.prepare import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': assert keep_freed_memory()\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page\n"
        "a = np.ones(16 << 20, np.uint8); before = rss(); del a\n"
        "print(before - rss())\n"
    )

    def released(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.strip())

    assert released("default") >= 12 << 20
    assert released("keep") < 1 << 20


def test_files_per_task_fills_big_batches_but_keeps_every_cpu_busy():
    assert files_per_task(807, 32, 2) == 32  # a laptop: the largest batches
    assert files_per_task(807, 32, 64) == 4  # a cluster: 4 tasks for each of its 64 CPUs
    assert files_per_task(10, 32, 2) == 2
    assert files_per_task(1, 32, 128) == 1
    assert files_per_task(0, 32, 2) == 1
    assert files_per_task(807, 0, 2) == 1  # a batch_size of 0 still means one file a task


def test_warm_prepare_writes_nothing_and_does_not_retry_bad_files(messy_dataset, tmp_path):
    cfg = cfg_for(messy_dataset, str(tmp_path / "cache"))
    prepare(cfg, use_ray=False)
    files = sorted((tmp_path / "cache").rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    warm = prepare(cfg, use_ray=False)
    assert warm.computed == 0 and warm.failed == 2 and warm.reused == 13
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").rglob("*"))} == before
    # A bad file that changes is tried again.
    write_audio(messy_dataset / "pop" / "empty.wav", tone(500, 2.0))
    fixed = prepare(cfg, use_ray=False)
    assert fixed.computed == 1 and fixed.failed == 1
