"""The web page (`python -m mgc.web`): its helpers, its logic through Streamlit's AppTest, and the
page in a real headless Chromium, used as a person would: upload a clip, read the genre, upload
a broken file, read the error.

The browser test needs Chromium and its driver (Debian: `apt-get install chromium
chromium-driver`) and skips, saying so, without them. MGC_WEB_TEST_MODEL serves another model
than the tiny trained one (the bundled one, say), and MGC_WEB_SCREENSHOT copies the result's
screenshot there, which is how docs/web.png is made:

    MGC_WEB_TEST_MODEL=mgc/bundled/gtzan MGC_WEB_SCREENSHOT=docs/web.png \\
        .venv/bin/python -m pytest tests/test_web.py -k browser
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import free_port, headless_chromium, wait_for
from conftest import gtzan_dir, tone, write_audio

pytest.importorskip("streamlit", reason="the web page needs streamlit (the dev or web extra)")

from mgc.serve.web import core  # noqa: E402
from mgc.web import main as web_main  # noqa: E402
from mgc.web import streamlit_args  # noqa: E402

APP = Path(core.__file__).with_name("app.py")
# Debian's packages put them here; elsewhere, wherever PATH finds them.
HEADLINE = re.compile(r"Top genre: \S.* \(\d+\.\d %\)")


@pytest.fixture(scope="module")
def model_dir(trained_run) -> Path:
    return trained_run[0]


def broken_bytes() -> bytes:
    return np.random.default_rng(7).bytes(6000)


# ---------------------------------------------------------------------------------------------
# Helpers, without Streamlit


def test_model_path_prefers_script_argument_then_environment(tmp_path):
    env = {core.MODEL_ENV: str(tmp_path / "from_env")}
    assert core.model_path(["--model", str(tmp_path / "arg")], env) == tmp_path / "arg"
    assert core.model_path([], env) == tmp_path / "from_env"
    assert core.model_path([], {}) == core.BUNDLED_MODEL
    # A test runner's own arguments are not the page's, and no prefix of one is taken for --model.
    assert core.model_path(["-q", "--mo", "x", "tests/test_web.py"], {}) == core.BUNDLED_MODEL


def test_missing_model_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert not core.has_bundle(tmp_path)
    assert web_main(["--model", str(tmp_path), "--port", "8599"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bundle.json missing" in err
    assert "Traceback" not in err


def test_streamlit_is_headless_local_and_quiet(tmp_path):
    args = streamlit_args(tmp_path, 8599)
    assert args[:2] == ["run", str(APP)]
    for flag in (
        "--server.address=127.0.0.1",
        "--server.port=8599",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        f"--server.maxUploadSize={core.MAX_UPLOAD_MB}",
    ):
        assert flag in args
    assert args[-3:] == ["--", "--model", str(tmp_path)]


def test_card_summary_reads_a_published_card(tmp_path):
    card = {
        "model": "cnn4",
        "params": 123456,
        "split": "fault_filtered",
        "tracks": {"train": 443, "valid": 197, "test": 290},
        "shipped_test": {"track_accuracy": 0.8123, "track_macro_f1": 0.8011},
        "test": {"track_accuracy": {"mean": 0.8, "std": 0.01, "n": 3}},
        "genres": ["blues", "metal"],
    }
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    text = "\n".join(core.card_summary(tmp_path))
    assert "fault_filtered split, 290 tracks" in text
    assert "accuracy 0.812, macro-F1 0.801" in text
    assert "Over 3 seeds" in text and "123,456 parameters" in text


def test_card_summary_falls_back(tmp_path, model_dir):
    # A training run: its own metrics.json, whether given the run or its bundle folder.
    for path in (model_dir, model_dir / "bundle"):
        assert "a training run, no card" in core.card_summary(path)[0]
    assert core.card_summary(tmp_path) == [
        "No model card beside this bundle: test results unknown."
    ]
    (tmp_path / "model_card.json").write_text("{not json")
    assert "unreadable" in core.card_summary(tmp_path)[0]


def test_samples_are_short_labelled_clips():
    import soundfile as sf

    clips = core.sample_clips()
    assert len(clips) >= 3
    for clip in clips:
        info = sf.info(str(clip))
        assert 5 <= info.duration <= 12, clip
        assert core.sample_label(clip).split(":")[0] in clip.name
    assert core.sample_label(Path("x/mine.wav")) == "mine.wav"


def test_upload_limit_and_temporary_file():
    assert core.upload_problem(1024) is None
    message = core.upload_problem(51 * 1024 * 1024, limit_mb=50)
    assert message and "limit is 50 MB" in message
    with core.upload_as_file("Song.MP3", b"abc") as tmp:
        assert tmp.suffix == ".mp3" and tmp.read_bytes() == b"abc"
    assert not tmp.exists()
    with pytest.raises(RuntimeError), core.upload_as_file("a.wav", b"x") as tmp:
        raise RuntimeError("the page failed half-way")
    assert not tmp.exists()


def test_result_tables_come_from_predict_one(model_dir, tmp_path):
    model = core.open_model(model_dir)
    clip = write_audio(tmp_path / "metal.wav", tone(880, 4.0))
    row = core.classify(model, clip, "metal.wav")
    assert row["file"] == "metal.wav" and row["model"] == model.model_id
    assert HEADLINE.fullmatch(core.headline(row))
    probs = core.probability_frame(row)
    assert sorted(probs["genre"]) == sorted(model.bundle.genres)
    assert probs["probability"].is_monotonic_decreasing
    timeline = core.timeline_frame(row)
    assert len(timeline) == len(row["segments"]) > 1
    assert timeline["start"].iloc[0] == 0 and timeline["end"].iloc[-1] == pytest.approx(4.0)
    logmel, seconds = core.first_segment_logmel(model.predictor, clip)
    assert logmel.shape[0] == model.bundle.features.n_mels and seconds == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------
# The page's logic, through Streamlit's AppTest (in this process, no browser)


@pytest.fixture
def app(model_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(core.MODEL_ENV, str(model_dir))
    at = AppTest.from_file(str(APP), default_timeout=120)
    return at.run()


def page_text(at) -> str:
    parts = [e.value for e in (*at.subheader, *at.markdown, *at.caption, *at.error, *at.info)]
    return "\n".join(str(p) for p in parts)


def test_app_waits_for_a_file(app):
    assert not app.exception
    assert app.info and "Choose a file" in app.info[0].value
    assert "a training run, no card" in page_text(app)  # the sidebar's model summary


def test_app_sample_clip(app):
    clips = core.sample_clips()
    app.radio[0].set_value("Try a sample clip").run()
    assert not app.exception and not app.error
    assert app.selectbox[0].options == [core.sample_label(c) for c in clips]
    assert HEADLINE.fullmatch(app.subheader[0].value), app.subheader[0].value
    assert clips[0].name in page_text(app)
    # Another sample: its own result, and no traceback either.
    app.selectbox[0].set_value(clips[-1]).run()
    assert not app.exception and not app.error
    assert clips[-1].name in page_text(app)


def test_app_upload_good_broken_and_silent(app, tmp_path, monkeypatch):
    import tempfile

    uploads = tmp_path / "uploads"  # where the page's temporary copies go, to check they go
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    uploader = app.file_uploader[0]
    clip = write_audio(tmp_path / "pop.wav", tone(3520, 3.0))
    uploader.upload("pop.wav", clip.read_bytes(), "audio/wav")
    app.run()
    assert not app.exception and not app.error
    assert HEADLINE.fullmatch(app.subheader[0].value)

    app.file_uploader[0].upload("broken.mp3", broken_bytes(), "audio/mpeg")
    app.run()
    assert not app.exception
    assert app.error[0].value.startswith("Could not classify broken.mp3: ")
    assert not app.subheader

    silent = write_audio(tmp_path / "quiet.wav", np.zeros(22050 * 2, np.float32))
    app.file_uploader[0].upload("quiet.wav", silent.read_bytes(), "audio/wav")
    app.run()
    assert not app.exception
    assert "Could not classify quiet.wav: silent" in app.error[0].value
    assert list(uploads.iterdir()) == []


def test_app_loads_the_model_once(model_dir, monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    loads = []
    real_open = core.open_model
    monkeypatch.setattr(core, "open_model", lambda path: loads.append(path) or real_open(path))
    monkeypatch.setenv(core.MODEL_ENV, str(model_dir))
    st.cache_resource.clear()
    clip = write_audio(tmp_path / "blues.wav", tone(220, 3.0)).read_bytes()
    for visitor in range(2):  # two sessions, two uploads each
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        for name in (f"a{visitor}.wav", f"b{visitor}.wav"):
            at.file_uploader[0].upload(name, clip, "audio/wav")
            at.run()
            assert not at.exception and HEADLINE.fullmatch(at.subheader[0].value)
    assert len(loads) == 1


def test_app_without_a_model_says_how_to_start(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(core.MODEL_ENV, str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert "bundle.json missing" in at.error[0].value

    (tmp_path / "bundle.json").write_text("{}")  # there, but not a bundle mgc can load
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert at.error[0].value.startswith(f"Could not load the model at {tmp_path}")


# ---------------------------------------------------------------------------------------------
# The page in a real browser


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mgc.serve.web exited with status {server.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mgc.serve.web did not answer at {url} within {timeout:.0f} s")


@pytest.fixture
def served(model_dir, tmp_path):
    """(url, server log path): `python -m mgc.web` in a subprocess, always stopped after."""
    model = Path(os.environ.get("MGC_WEB_TEST_MODEL") or model_dir)
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mgc.web", "--model", str(model), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, server)
        yield url, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def browser():
    yield from headless_chromium("1400,1700")


def body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def upload(driver, path: Path) -> None:
    # Streamlit's drop zone is a styled <input type=file>; send_keys is what choosing does.
    field = wait_for(
        driver,
        lambda d: d.find_elements(
            "css selector", '[data-testid="stFileUploader"] input[type=file]'
        ),
        "the upload field",
    )
    field[0].send_keys(str(path))


def test_browser_upload_clip_then_broken_file(browser, served, tmp_path):
    # `browser` comes first: without Chromium the test skips before a server is started.
    url, log_path = served
    gtzan = gtzan_dir()
    if gtzan and sorted(gtzan.glob("metal/*.ogg")):
        clip = sorted(gtzan.glob("metal/*.ogg"))[0]
    else:  # no real clips here: a tone stands in
        clip = write_audio(tmp_path / "tone.wav", tone(880, 8.0))
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(broken_bytes())

    browser.get(url)
    upload(browser, clip)
    wait_for(browser, lambda d: HEADLINE.search(body_text(d)), "the top genre")
    wait_for(
        browser,
        lambda d: d.find_elements(
            "css selector",
            '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
        ),
        "the genre chart",
    )
    wait_for(
        browser,
        lambda d: d.find_elements("css selector", '[data-testid="stImage"] img'),
        "the spectrogram",
    )
    text = body_text(browser)
    assert clip.name in text and "All genres" in text and "Along the clip" in text
    time.sleep(1.0)  # let the charts finish their first paint before the picture
    shot = tmp_path / "web.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("MGC_WEB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MGC_WEB_SCREENSHOT"])

    upload(browser, broken)
    error = wait_for(
        browser,
        lambda d: [
            e
            for e in d.find_elements("css selector", '[data-testid="stAlert"]')
            if "Could not classify broken.mp3" in e.text
        ],
        "the error message",
    )
    assert error[0].is_displayed()
    text = body_text(browser)
    assert "Traceback" not in text and not HEADLINE.search(text)
    assert not browser.find_elements("css selector", '[data-testid="stException"]')
    browser.save_screenshot(str(tmp_path / "web_error.png"))
    assert "Traceback" not in log_path.read_text(errors="replace")
