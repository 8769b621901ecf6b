"""mgc.core.cli.run_command: what a command does when it is stopped."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from mgc.core.cli import run_command


def stopped() -> int:
    raise KeyboardInterrupt


def test_an_interrupt_disconnects_ray_before_the_hint(monkeypatch, capsys):
    events: list[str] = []
    fake_ray = SimpleNamespace(is_initialized=lambda: True, shutdown=lambda: events.append("ray"))
    monkeypatch.setitem(sys.modules, "ray", fake_ray)

    def hint() -> str:
        events.append("hint")
        return "continue with  python -m mgc.sweep e0.yaml --resume"

    assert run_command(stopped, hint) == 130
    assert events == ["ray", "hint"]
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--resume")


def test_an_interrupt_without_ray_or_with_a_failing_shutdown_still_gives_the_hint(
    monkeypatch, capsys
):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert run_command(stopped, "run it again") == 130

    def broken() -> None:
        raise RuntimeError("already half down")

    monkeypatch.setitem(
        sys.modules, "ray", SimpleNamespace(is_initialized=lambda: True, shutdown=broken)
    )
    assert run_command(stopped, "run it again") == 130
    assert capsys.readouterr().err.count("interrupted: run it again") == 2
