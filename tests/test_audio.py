from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write_audio

from mgc.core.audio import AudioError, load_audio


def test_stereo_44k_becomes_mono_22k(tmp_path: Path):
    left = tone(440, 2.0, sr=44100)
    stereo = np.stack([left, left * 0.5], axis=1)
    p = write_audio(tmp_path / "s.wav", stereo, sr=44100)
    wave = load_audio(p, 22050)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(wave.size - 44100) <= 2
    # Mono is the channel mean; the 440 Hz tone survives resampling.
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 22050 / wave.size - 440) < 2
    assert np.max(np.abs(wave)) == pytest.approx(0.3 * 0.75, rel=0.1)


@pytest.mark.parametrize(
    "ext,fmt", [("wav", None), ("flac", None), ("ogg", None), ("au", None), ("mp3", None)]
)
def test_formats_decode(tmp_path: Path, ext: str, fmt):
    wave = tone(330, 1.0)
    p = tmp_path / f"x.{ext}"
    try:
        write_audio(p, wave)
    except (sf.LibsndfileError, TypeError, ValueError) as exc:  # pragma: no cover - old libsndfile
        pytest.skip(f"libsndfile here cannot write {ext}: {exc}")
    out = load_audio(p, 22050)
    assert abs(out.size - wave.size) < 2200  # mp3 adds encoder delay/padding
    assert np.max(np.abs(out)) > 0.2


def test_m4a_decodes_through_ffmpeg(tmp_path: Path):
    av = pytest.importorskip("av")
    p = tmp_path / "x.m4a"
    wave = tone(440, 1.0, sr=44100)
    with av.open(str(p), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    got = load_audio(p, 22050)
    assert abs(got.size - 22050) < 3000 and np.max(np.abs(got)) > 0.1


def test_bad_files_raise_one_line_errors(tmp_path: Path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    for path, reason in (
        (empty, "empty"),
        (corrupt, "cannot decode"),
        (tmp_path / "nope.wav", "not found"),
    ):
        with pytest.raises(AudioError) as exc:
            load_audio(path, 22050)
        msg = str(exc.value)
        assert msg.startswith(str(path)) and reason in msg and "\n" not in msg


def test_vorbis_fast_path_gives_libsndfile_samples(tmp_path: Path):
    # .ogg goes through stb_vorbis first; it must decode to what libsndfile gives, stereo too.
    from mgc.core.audio import _soundfile_blocks, _vorbis_blocks

    left = tone(440, 1.5, sr=44100)
    p = tmp_path / "s.ogg"
    sf.write(p, np.stack([left, 0.5 * left], axis=1), 44100, format="OGG", subtype="VORBIS")
    fast_rate, fast_blocks = _vorbis_blocks(p, None)
    ref_rate, ref_blocks = _soundfile_blocks(p)
    fast = np.concatenate(list(fast_blocks), axis=1)
    ref = np.concatenate(list(ref_blocks), axis=1)
    assert fast_rate == ref_rate == 44100 and fast.shape == ref.shape == (2, left.size)
    np.testing.assert_allclose(fast, ref, atol=1e-6)


def test_ogg_that_is_not_vorbis_falls_back(tmp_path: Path):
    p = tmp_path / "opus.ogg"
    try:
        sf.write(p, tone(440, 1.0, sr=48000), 48000, format="OGG", subtype="OPUS")
    except (sf.LibsndfileError, TypeError, ValueError) as exc:  # pragma: no cover - old libsndfile
        pytest.skip(f"libsndfile here cannot write Opus: {exc}")
    wave = load_audio(p, 22050)
    assert abs(wave.size - 22050) < 2000 and np.max(np.abs(wave)) > 0.1
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(b"OggS" + bytes(400))
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(broken, 22050)


def test_vorbis_decodes_bytes_the_caller_already_read(tmp_path: Path):
    # prepare hashes each file's bytes and hands them on, so the file is not read twice.
    a, b = tmp_path / "a.ogg", tmp_path / "b.ogg"
    sf.write(a, tone(330, 1.0), 22050, format="OGG", subtype="VORBIS")
    sf.write(b, tone(880, 1.0), 22050, format="OGG", subtype="VORBIS")
    from_bytes = load_audio(a, 22050, raw=b.read_bytes())
    np.testing.assert_array_equal(from_bytes, load_audio(b, 22050))
