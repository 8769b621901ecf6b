import os
from pathlib import Path

import pytest
import torch

from mgc.core.config import load_config
from mgc.data.loader import FeaturesMissing, build_chunk_set, iterate_batches, load_split_data
from mgc.data.prepare import prepare
from mgc.features.frontend import Frontend


def cfg_for(root: Path, tmp_path: Path, *extra: str):
    return load_config(
        None,
        [f"data.root={root}", f"cache.dir={tmp_path / 'cache'}", "chunks.window_s=1.0", *extra],
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_loader_fails_with_the_command_that_makes_the_features(synth_dataset, tmp_path):
    cfg = cfg_for(synth_dataset, tmp_path, "features.n_mels=64")
    with pytest.raises(FeaturesMissing) as exc:
        load_split_data(cfg)
    message = str(exc.value)
    assert "\n" not in message
    assert "no current log-mel for 12 of 12 tracks" in message
    assert f"python -m mgc.prepare data.root={synth_dataset}" in message
    assert "features.n_mels=64" in message  # the features that differ from the defaults
    assert not (tmp_path / "cache").exists()  # loading wrote nothing


def test_loader_only_reads_and_sees_changed_files(synth_dataset, tmp_path):
    cfg = cfg_for(synth_dataset, tmp_path)
    prepare(cfg, use_ray=False)
    before = snapshot(tmp_path / "cache")
    data = load_split_data(cfg)
    assert sum(len(p) for p in data.parts.values()) == 12 and data.genres == [
        "blues",
        "metal",
        "pop",
    ]
    assert snapshot(tmp_path / "cache") == before
    # A file changed after prepare is not served stale: the loader says what to run.
    changed = synth_dataset / "pop" / "pop.00001.wav"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    with pytest.raises(FeaturesMissing, match="1 of 12 tracks .*pop.00001.wav"):
        load_split_data(cfg)


def test_bad_files_are_reported_not_missing(synth_dataset, tmp_path):
    (synth_dataset / "pop" / "broken.wav").write_bytes(b"RIFF but not really")
    cfg = cfg_for(synth_dataset, tmp_path)
    prepare(cfg, use_ray=False)
    data = load_split_data(cfg)
    assert len(data.skipped) == 1 and "broken.wav" in data.skipped[0]


def test_chunk_batches_are_the_frontends_windows(synth_dataset, tmp_path):
    cfg = cfg_for(synth_dataset, tmp_path, "chunks.overlap=0.5")
    prepare(cfg, use_ray=False)
    track = load_split_data(cfg).parts["test"][0]
    whole = track.logmel.clone()
    chunk_set = build_chunk_set([track], cfg.chunks, cfg.features)
    (x, _, t), *rest = list(iterate_batches(chunk_set, 1000))
    assert not rest and torch.equal(t, torch.zeros(len(x), dtype=torch.long))
    assert torch.equal(x, Frontend(cfg.features, cfg.chunks).windows(whole))


def test_an_epoch_of_random_windows_per_track(synth_dataset, tmp_path):
    from mgc.data.loader import random_windows

    cfg = cfg_for(synth_dataset, tmp_path)
    prepare(cfg, use_ray=False)
    tracks = load_split_data(cfg).parts["train"]
    full = build_chunk_set(tracks, cfg.chunks, cfg.features)
    a = random_windows(full, 3, torch.Generator().manual_seed(0))
    b = random_windows(full, 3, torch.Generator().manual_seed(0))
    assert len(a) == 3 * len(tracks)
    assert torch.equal(a.chunk_track, torch.arange(len(tracks)).repeat_interleave(3))
    assert torch.equal(a.chunk_start, b.chunk_start)  # seeded: the same draw
    frames = torch.tensor([t.logmel.shape[1] for t in tracks])[a.chunk_track]
    assert bool((a.chunk_start >= 0).all()) and bool((a.chunk_start + a.window <= frames).all())
    # Not the fixed grid: random places (4 s tracks give 4 grid windows of 43 frames).
    assert not set(a.chunk_start.tolist()) <= set(full.chunk_start.tolist())
    x = a.batch(torch.arange(len(a)))
    assert x.shape == (len(a), 1, 128, a.window)
