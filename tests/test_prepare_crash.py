"""kill -9 while features are written: the rerun computes only what is missing, and no truncated
array is ever read from the cache. Real processes, real SIGKILL; nothing timed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_audio
from signals import default_sigint

from mgc.core.config import load_config
from mgc.data.cache import FeatureStore

pytestmark = pytest.mark.slow


def wait_until(ready, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(0.02)


def test_killed_writer_never_leaves_a_truncated_array(tmp_path: Path):
    """A process rewriting one 64 MB array through the cache's writer is killed mid-write,
    many times: what is under the array's name always loads whole."""
    target = tmp_path / "cache" / "logmel-x" / "ab" / "abcd.npy"
    script = textwrap.dedent(
        f"""
        import io, numpy as np
        from mgc.core.fsio import atomic_write
        a = np.arange(16_000_000, dtype=np.float32)
        buf = io.BytesIO(); np.save(buf, a); payload = buf.getvalue()
        while True:
            atomic_write({str(target)!r}, payload)
        """
    )
    expected = np.arange(16_000_000, dtype=np.float32)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        wait_until(target.exists, proc, "a first whole write")
        # Let it get into a further write (a temporary beside the target), then kill it.
        wait_until(lambda: len(list(target.parent.iterdir())) > 1, proc, "a write in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        np.testing.assert_array_equal(np.load(target), expected)
    store = FeatureStore(str(tmp_path / "cache"), load_config().features)
    assert all(not name.startswith(".") for name in store.stored())


def test_prepare_killed_midway_then_rerun_computes_only_the_rest(tmp_path: Path):
    root = tmp_path / "ds"
    for g, base in (("blues", 220.0), ("metal", 880.0), ("pop", 3520.0)):
        for i in range(12):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(base * (1 + 0.02 * i), 20.0, seed=i))
    cache = tmp_path / "cache"
    args = [f"data.root={root}", f"cache.dir={cache}"]
    cmd = [sys.executable, "-m", "mgc.prepare", *args, "--no-ray"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def arrays() -> list[Path]:
        return [p for p in cache.rglob("*.npy") if not p.name.startswith(".")]

    wait_until(lambda: len(arrays()) >= 4, proc, "four arrays written")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    done_before = len(arrays())
    assert 4 <= done_before < 36, "prepare finished before it could be killed"

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{36 - done_before} computed, {done_before} from cache, 0 skipped" in rerun.stdout
    # Every array under the cache loads whole, and the manifest lists all 36 tracks.
    cfg = load_config(None, args)
    store = FeatureStore(str(cache), cfg.features)
    for path in arrays():
        assert np.load(path).shape[0] == cfg.features.n_mels
    manifest = json.loads(Path(store.manifest_path(root)).read_text())
    assert len(manifest["entries"]) == 36


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("ray", [False, True], ids=["local", "ray"])
def test_prepare_stopped_by_a_signal_says_how_to_continue(tmp_path: Path, sig, ray: bool):
    root = tmp_path / "ds"
    for g in ("blues", "metal"):
        for i in range(20):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(300.0 * (1 + 0.03 * i), 20.0, seed=i))
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "mgc.prepare", f"data.root={root}", f"cache.dir={cache}"]
    cmd += [] if ray else ["--no-ray"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_until(lambda: any(cache.rglob("*.npy")), proc, "a first array")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a local Ray left behind
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    # Nothing half-written under a name a later run reads; the rerun finishes the job.
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name.startswith(".")]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "40/40 tracks" in rerun.stdout, rerun.stderr[-2000:]
