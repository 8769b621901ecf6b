import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import tone, write_audio

from mgc.core.audio import load_audio, looks_like_audio, stream_audio, write_m4a
from mgc.core.device import CPU_FP32
from mgc.features.frontend import Frontend
from mgc.models.bundle import load_bundle
from mgc.models.inference import Predictor, predict_file
from mgc.predict import main
from mgc.serve.predict import find_audio

GENRES = ["blues", "metal", "pop"]


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A folder of the formats users have, good and bad, in sub-folders."""
    lib = tmp_path / "lib"
    metal = tone(880, 3.0)
    stereo44 = np.stack([tone(880, 3.0, sr=44100)] * 2, axis=1)
    write_audio(lib / "a" / "stereo44k.wav", stereo44, sr=44100)
    write_audio(lib / "a" / "hi48k.flac", tone(880, 3.0, sr=48000), sr=48000)
    (lib / "b").mkdir()
    sf.write(lib / "b" / "song.mp3", metal, 22050, format="MP3")
    sf.write(lib / "b" / "clip.ogg", metal, 22050, format="OGG", subtype="VORBIS")
    write_m4a(lib / "b" / "track.m4a", tone(880, 3.0, sr=44100), 44100)
    write_audio(lib / "b" / "old.au", metal, format="AU")
    write_audio(lib / "no_extension_wav", metal, format="WAV")  # audio by content, not name
    (lib / "b" / "broken.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    (lib / "b" / "notes.txt").write_text("not audio")
    (lib / ".hidden").mkdir()
    write_audio(lib / ".hidden" / "skip.wav", metal)
    return lib


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mgc.predict", *args], capture_output=True, text=True, timeout=300
    )


def test_formats_rates_and_channels_decode_to_the_same_song(library: Path):
    ref = load_audio(library / "b" / "clip.ogg", 22050)
    for name in ("a/stereo44k.wav", "a/hi48k.flac", "b/song.mp3", "b/track.m4a", "b/old.au"):
        wave = load_audio(library / name, 22050)
        assert abs(wave.size - ref.size) < 0.1 * 22050, name  # codec padding at most
        spectrum = np.abs(np.fft.rfft(wave[:22050]))
        assert np.argmax(spectrum) == pytest.approx(880, abs=3), name  # Hz bins over 1 s


def test_finding_audio_by_content_and_extension(library: Path):
    files, ignored = find_audio([library])
    names = sorted(f.name for f in files)
    assert "no_extension_wav" in names and "broken.mp3" in names and "skip.wav" not in names
    assert [f.name for f in ignored] == ["notes.txt"]
    assert looks_like_audio(library / "no_extension_wav")
    assert not looks_like_audio(library / "b" / "notes.txt")


def test_cli_folder_with_a_broken_file_json(trained_run, library: Path, tmp_path: Path):
    run_dir, _ = trained_run
    out = tmp_path / "out.json"
    proc = run_cli(str(library), "--model", str(run_dir), "--out", str(out), "--top-k", "2")
    assert proc.returncode == 1, proc.stderr  # one file could not be classified
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp3" in errors[0] and "cannot decode" in errors[0]
    assert "ignored 1 file(s) that are not audio" in proc.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 8
    good = [r for r in rows if "error" not in r]
    assert len(good) == 7
    for r in good:
        assert set(r) >= {"file", "model", "duration_s", "top_k", "probabilities"}
        assert list(r["probabilities"]) == GENRES
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert len(r["top_k"]) == 2 and r["top_k"][0]["score"] >= r["top_k"][1]["score"]
        assert r["duration_s"] == pytest.approx(3.0, abs=0.1)
    # Every copy of the same 880 Hz tone gets the same top genre, whatever its format.
    assert len({r["top_k"][0]["label"] for r in good}) == 1


def test_cli_csv_table_and_exit_codes(trained_run, library: Path, tmp_path: Path):
    run_dir, _ = trained_run
    wav = library / "a" / "stereo44k.wav"
    proc = run_cli(str(wav), "--model", str(run_dir), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(__import__("io").StringIO(proc.stdout))
    assert list(table.columns) == [
        "file",
        "model",
        "duration_s",
        "top_label",
        "top_score",
        *GENRES,
        "error",
    ]
    assert len(table) == 1 and table["top_label"][0] in GENRES

    proc = run_cli(str(wav), "--model", str(run_dir), "--format", "table")
    assert proc.returncode == 0 and "stereo44k.wav" in proc.stdout and "%" in proc.stdout

    assert run_cli(str(tmp_path / "missing.wav"), "--model", str(run_dir)).returncode == 2
    bad = run_cli(str(wav), "--model", str(tmp_path / "no_model"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "bundle" in bad.stderr
    assert run_cli(str(wav), "--model", str(run_dir), "--top-k", "0").returncode == 2
    assert run_cli(str(wav), "--model", str(run_dir), "--hop-s", "2").returncode == 2


def test_bad_files_one_line_each(trained_run, tmp_path: Path, capsys):
    run_dir, _ = trained_run
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, not a RIFF file")
    write_audio(tmp_path / "silent.wav", np.zeros(22050 * 2, np.float32))
    write_audio(tmp_path / "nan.wav", np.full(22050, np.nan, np.float32), subtype="FLOAT")
    write_audio(tmp_path / "ok.wav", tone(220, 2.0))
    assert main([str(tmp_path), "--model", str(run_dir), "--format", "json"]) == 1
    captured = capsys.readouterr()
    rows = {Path(r["file"]).name: r for r in json.loads(captured.out)}
    assert "error" not in rows["ok.wav"]
    reasons = {n: rows[n]["error"] for n in ("empty.wav", "text.wav", "silent.wav", "nan.wav")}
    assert "empty" in reasons["empty.wav"] and "cannot decode" in reasons["text.wav"]
    assert "silent" in reasons["silent.wav"] and "not finite" in reasons["nan.wav"]
    err_lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 4 and "Traceback" not in captured.err


def test_short_file_is_padded_and_says_so(trained_run, tmp_path: Path, capsys):
    run_dir, _ = trained_run
    write_audio(tmp_path / "blip.wav", tone(880, 0.3))
    assert main([str(tmp_path / "blip.wav"), "--model", str(run_dir), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert "padded" in row["note"] and row["duration_s"] == pytest.approx(0.3, abs=0.01)


def test_segments_follow_the_song(trained_run, tmp_path: Path, capsys):
    run_dir, _ = trained_run
    # 4 s of a low tone then 4 s of a high one: segments must tell them apart.
    write_audio(tmp_path / "medley.wav", np.concatenate([tone(220, 4.0), tone(3520, 4.0)]))
    args = [str(tmp_path / "medley.wav"), "--model", str(run_dir), "--format", "json"]
    assert main(args + ["--window-s", "2", "--hop-s", "2"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    segs = row["segments"]
    assert [s["start"] for s in segs] == [0.0, 2.0, 4.0, 6.0]
    assert segs[0]["top"][0]["label"] != segs[-1]["top"][0]["label"]
    assert main(args + ["--segments"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # The model's own windows: 345 frames, 43-frame windows every 22 frames → 14.
    assert len(row["segments"]) == 14


def test_stream_gives_the_whole_file_samples(tmp_path: Path):
    stereo = np.stack([tone(440, 7.0, sr=44100), tone(660, 7.0, sr=44100)], axis=1)
    path = write_audio(tmp_path / "s.flac", stereo, sr=44100)
    blocks = list(stream_audio(path, 22050, block_s=1.5))
    assert [b.size for b in blocks[:-1]] == [int(1.5 * 22050)] * (len(blocks) - 1)
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(path, 22050), atol=1e-6)


def test_segments_keep_the_whole_files_window_grid(trained_run):
    run_dir, _ = trained_run
    bundle = load_bundle(run_dir)
    frontend = Frontend(bundle.features, bundle.chunks)
    wave = np.random.default_rng(1).normal(0, 0.1, 22050 * 25).astype(np.float32)
    whole = frontend.windows(frontend.logmel(wave))
    segs = list(frontend.segments([wave[i : i + 7000] for i in range(0, wave.size, 7000)], 6.0))
    starts = [s.first_frame + st for s in segs for st in s.starts]
    assert starts == frontend.windowing.starts(frontend.logmel(wave).shape[-1])
    streamed = np.concatenate([s.inputs.numpy() for s in segs])
    assert streamed.shape == whole.shape
    # Same audio under each window; only the segment edges' frames and top_db floor differ.
    assert np.median(np.abs(streamed - whole.numpy())) < 1e-3
    # A stream no longer than a segment is cut exactly as the whole clip.
    (one,) = list(frontend.segments([wave[: 22050 * 5]], 6.0))
    assert np.array_equal(
        one.inputs.numpy(), frontend.windows(frontend.logmel(wave[: 22050 * 5])).numpy()
    )


def test_predict_file_streams_long_files_like_short_ones(trained_run, tmp_path: Path):
    run_dir, _ = trained_run
    bundle = load_bundle(run_dir)
    path = write_audio(tmp_path / "long.wav", np.tile(tone(880, 4.0), 40))  # 160 s
    short = predict_file(bundle, write_audio(tmp_path / "short.wav", tone(880, 4.0)), CPU_FP32)
    pred = Predictor(bundle, CPU_FP32, segment_s=20.0).predict_file(path)
    assert pred.duration_s == pytest.approx(160.0)
    whole_grid = pred_windows_of(bundle, 160 * 22050)
    assert len(pred.windows) == len(pred.chunk_probabilities) == whole_grid
    assert np.argmax(pred.probabilities) == np.argmax(short)


def pred_windows_of(bundle, n_samples: int) -> int:
    """Windows the whole-clip cut gives a file of n_samples (22 frames apart, 0.51 s)."""
    frontend = Frontend(bundle.features, bundle.chunks)
    return len(frontend.windowing.starts(1 + n_samples // bundle.features.hop_length))


HOUR_PROBE = r"""
import resource, sys
from mgc.models.bundle import load_bundle
from mgc.core.device import CPU_FP32
from mgc.models.inference import Predictor
pred = Predictor(load_bundle(sys.argv[1]), CPU_FP32).predict_file(sys.argv[2])
print(pred.duration_s, len(pred.windows), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_an_hour_long_file_in_bounded_memory(trained_run, tmp_path: Path):
    """Peak RSS for a one-hour file stays within 100 MB of a one-minute file's (decoded whole,
    the hour alone would be 318 MB of float32 at 22050 Hz)."""
    run_dir, _ = trained_run
    minute = tmp_path / "minute.wav"
    hour = tmp_path / "hour.wav"
    block = (tone(440, 60.0) * 0.5).astype(np.float32)
    write_audio(minute, block)
    with sf.SoundFile(hour, "w", 22050, 1, subtype="PCM_16") as fh:
        for _ in range(60):
            fh.write(block)

    def peak_kib(path: Path) -> tuple[float, int, int]:
        out = subprocess.run(
            [sys.executable, "-c", HOUR_PROBE, str(run_dir), str(path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout.split()
        return float(out[0]), int(out[1]), int(out[2])

    dur_m, _, rss_m = peak_kib(minute)
    dur_h, windows_h, rss_h = peak_kib(hour)
    assert dur_m == pytest.approx(60.0) and dur_h == pytest.approx(3600.0)
    assert windows_h == pred_windows_of(load_bundle(run_dir), 3600 * 22050)  # 7046
    assert (rss_h - rss_m) / 1024 < 100, (
        f"one minute {rss_m / 1024:.0f} MB, one hour {rss_h / 1024:.0f} MB"
    )


@pytest.mark.slow
def test_ray_maps_the_same_function_over_a_folder(ray_local, trained_run, library: Path, capsys):
    run_dir, _ = trained_run
    args = [str(library), "--model", str(run_dir), "--format", "json"]
    assert main(args) == 1
    local = json.loads(capsys.readouterr().out)
    assert main(args + ["--ray"]) == 1
    remote = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in remote] == [r["file"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert a.get("error") == b.get("error")
        if "probabilities" in a:
            for g in GENRES:
                assert a["probabilities"][g] == pytest.approx(b["probabilities"][g], abs=1e-4)


def test_an_unexpected_failure_on_one_file_does_not_stop_the_batch(
    trained_run, tmp_path, monkeypatch, capsys
):
    import mgc.serve.predict as predict_module

    run_dir, _ = trained_run
    write_audio(tmp_path / "a.wav", tone(220, 2.0))
    write_audio(tmp_path / "b.wav", tone(880, 2.0))
    real = predict_module.Predictor.predict_file

    def flaky(self, path):
        if Path(path).name == "a.wav":
            raise RuntimeError("kernel said no\nsecond line")
        return real(self, path)

    monkeypatch.setattr(predict_module.Predictor, "predict_file", flaky)
    assert main([str(tmp_path), "--model", str(run_dir), "--format", "json"]) == 1
    out = capsys.readouterr()
    rows = {Path(r["file"]).name: r for r in json.loads(out.out)}
    assert rows["a.wav"]["error"] == "RuntimeError: kernel said no"
    assert "top_k" in rows["b.wav"] and "Traceback" not in out.err
