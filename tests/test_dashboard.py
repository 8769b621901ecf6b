"""The Ray dashboard of a local sweep, with Ray's token authentication left on.

Ray 2.60 turns token authentication on for every local `ray.init`: the dashboard's API answers
401 without the token, and the page asks for it. The browser test starts a Ray the way
`python -m mgc.sweep` does (`mgc.core.cluster.init_ray`, in a subprocess of its own, on a free port
and with its own temp dir and token file, so a sweep already running is left alone), runs a
small Tune trial in it, and then does what a user does: open the page, paste what
`ray get-auth-token` prints, open the Actors page and find the trial there.

It needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`),
Selenium (the dev extra) and the dashboard (ray[default]); it skips, saying which, without
them. MGC_DASHBOARD_SCREENSHOT copies the screenshot there, which is how docs/dashboard.png
is made:

    MGC_DASHBOARD_SCREENSHOT=docs/dashboard.png .venv/bin/python -m pytest tests/test_dashboard.py
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser import free_port, headless_chromium, wait_for

from mgc.core.cluster import dashboard_hint

# Debian's packages put them here; elsewhere, wherever PATH finds them.
TRIAL_CLASS = "SlowTrial"
TOKEN = "0123456789abcdef" * 4

# The sweep's side, in its own process: Ray started by mgc's init_ray, then one Tune trial that
# reports every second until the test leaves a stop file (or, should the test die, ten minutes).
DRIVER = f"""
import logging, sys, time
from pathlib import Path

from ray import tune

from mgc.core.cluster import init_ray

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
work, port = Path(sys.argv[1]), int(sys.argv[2])
init_ray(num_cpus=1, quiet=True, dashboard_port=port)
print("driver: ray is up", flush=True)


class {TRIAL_CLASS}(tune.Trainable):
    def step(self):
        time.sleep(1.0)
        return {{"done": (work / "stop").exists() or self.iteration >= 600}}


tuner = tune.Tuner(
    {TRIAL_CLASS},
    run_config=tune.RunConfig(
        name="dash",
        storage_path=str(work / "results"),
        verbose=0,
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
    ),
)
results = tuner.fit()
print(f"driver: done, {{len(results)}} trial, errors: {{results.num_errors}}", flush=True)
"""


# ---------------------------------------------------------------------------------------------
# The log line, without Ray


def test_hint_names_the_token_source_and_never_the_token(tmp_path):
    url = "127.0.0.1:8265"
    on = {"RAY_AUTH_MODE": "token"}
    line = dashboard_hint(url, on)
    assert line.startswith("Ray dashboard: http://127.0.0.1:8265 ")
    assert "`ray get-auth-token`" in line
    assert str(Path.home() / ".ray" / "auth_token") in line
    path = tmp_path / "token"
    line = dashboard_hint(url, {**on, "RAY_AUTH_TOKEN_PATH": str(path)})
    assert f"in {path}" in line
    # Ray's order: the variable wins over the file, and its value is never printed.
    line = dashboard_hint(url, {**on, "RAY_AUTH_TOKEN": TOKEN, "RAY_AUTH_TOKEN_PATH": str(path)})
    assert "$RAY_AUTH_TOKEN" in line and TOKEN not in line and str(path) not in line


def test_hint_without_authentication():
    assert dashboard_hint("http://10.0.0.5:8265", {}) == (
        "Ray dashboard: http://10.0.0.5:8265 (token authentication is off)"
    )
    line = dashboard_hint("127.0.0.1:8265", {"RAY_AUTH_MODE": "disabled"})
    assert "off" in line and "get-auth-token" not in line


# ---------------------------------------------------------------------------------------------
# The dashboard in a real browser


def dashboard_installed() -> bool:
    import ray

    page = Path(ray.__file__).parent / "dashboard" / "client" / "build" / "index.html"
    return importlib.util.find_spec("aiohttp") is not None and page.is_file()


def wait_for_log(log_path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = log_path.read_text(errors="replace")
        if text in log:
            return log
        if proc.poll() is not None:
            pytest.fail(f"the Ray driver exited ({proc.returncode}) first:\n{log[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {text!r} from the Ray driver within {timeout:.0f} s:\n{log[-3000:]}")


def stop_driver(proc: subprocess.Popen) -> None:
    """Only ever this test's own driver (its process group), never any other Ray."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # Ray's handler shuts its local cluster down
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def status_without_token(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def browser():
    yield from headless_chromium("1400,640")


@pytest.fixture
def sweep_dashboard():
    """(dashboard url, driver log, work dir, env): a local Ray started by init_ray in a
    subprocess with a trial running, on a free port, with its own short temp dir (Ray's socket
    paths must stay short) and its own token file; stopped and removed after."""
    if not dashboard_installed():
        pytest.skip("the Ray dashboard is not installed (pip install 'ray[default]')")
    work = Path(tempfile.mkdtemp(prefix="rdash-", dir="/tmp"))
    token_file = work / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    # RAY_AUTH_MODE unset: Ray's own default for a local ray.init. The token file is this
    # test's, so no token is written to the user's ~/.ray.
    env.update(RAY_TMPDIR=str(work), RAY_AUTH_TOKEN_PATH=str(token_file))
    script = work / "driver.py"
    script.write_text(DRIVER)
    log_path = work / "driver.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(work), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,  # one process group: this driver and what it starts
        )
    try:
        wait_for_log(log_path, "driver: ray is up", proc)
        yield f"http://127.0.0.1:{port}", log_path, work, env
        (work / "stop").touch()
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("the Ray driver did not finish within 300 s of being told to stop")
        log = log_path.read_text(errors="replace")
        assert proc.returncode == 0, log[-3000:]
        assert "driver: done, 1 trial, errors: 0" in log, log[-3000:]
    finally:
        stop_driver(proc)
        shutil.rmtree(work, ignore_errors=True)


def token_field(driver):
    return driver.find_elements("css selector", '[role="dialog"] input[type="password"]')


def submit_token(driver, token: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = wait_for(driver, token_field, "the dashboard's token prompt")[0]
    # A React field: clear() leaves its state behind, so empty it the way a person does.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    assert field.get_attribute("value") == ""
    field.send_keys(token)
    buttons = driver.find_elements("xpath", '//div[@role="dialog"]//button[.="Submit"]')
    assert buttons, "the token prompt has no Submit button"
    buttons[0].click()


def trial_row(driver) -> list:
    rows = driver.find_elements("css selector", "tbody tr")
    return [r for r in rows if TRIAL_CLASS in r.text.split() and "ALIVE" in r.text.split()]


def test_browser_sees_the_trial_after_pasting_the_token(browser, sweep_dashboard, tmp_path):
    # `browser` comes first: without Chromium the test skips before Ray is started.
    url, log_path, work, env = sweep_dashboard
    token = (work / "auth_token").read_text()

    # init_ray's line: this dashboard, the command, this token file; never the token.
    log = log_path.read_text(errors="replace")
    hints = [line for line in log.splitlines() if "mgc.core.cluster: Ray dashboard:" in line]
    assert len(hints) == 1, log[-3000:]
    hint = hints[0]
    assert f"Ray dashboard: {url} " in hint
    assert "`ray get-auth-token`" in hint and str(work / "auth_token") in hint
    assert token not in log

    # Without the token the API refuses; the page itself loads, to ask for it.
    assert status_without_token(url) == 401
    # What the user runs: `ray get-auth-token` (here the same CLI, through this interpreter).
    printed = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == token

    browser.get(url)
    prompt = wait_for(
        browser,
        lambda d: [e for e in d.find_elements("css selector", '[role="dialog"]') if e.text],
        "the token prompt",
    )[0]
    assert "Authentication Token Required" in prompt.text
    assert "`ray get-auth-token`" in prompt.text  # Ray's own advice, the same as init_ray's
    submit_token(browser, "not-" + printed)  # a wrong token is refused, the prompt stays
    wait_for(browser, lambda d: "Invalid authentication token" in d.page_source, "the refusal")
    submit_token(browser, printed)
    wait_for(browser, lambda d: not token_field(d), "the prompt to close")
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["ray-authentication-token"]["httpOnly"]

    browser.get(f"{url}/#/actors")
    wait_for(browser, trial_row, "the trial's actor, alive, in the Actors table")
    assert not token_field(browser)
    time.sleep(1.0)  # let the table finish its first paint before the picture
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("MGC_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MGC_DASHBOARD_SCREENSHOT"])
