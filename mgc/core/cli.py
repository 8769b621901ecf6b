"""What every `python -m mgc.*` command shares: `[CONFIG] [k=v …]` arguments and one-line errors."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

from mgc.core.errors import UserError

# Errors a user can act on: printed as one line, exit status 2. Anything else is a bug and keeps
# its traceback. An unreadable or missing file (OSError) is the user's to fix too.
USER_ERRORS = (UserError, OSError)


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """Command lines take `[CONFIG] [k=v ...]`: a first argument that is an override, not a
    YAML file, means "defaults plus these overrides"."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


# What `--reject-below` given without a number means: the threshold stored in the model bundle.
REJECT_WITH_MODEL = "model"


def add_reject_option(parser: argparse.ArgumentParser) -> None:
    """`--reject-below [P]`, shared by mgc.predict, mgc.web and mgc.bot (resolved against the
    model by mgc.serve.predict.reject_threshold)."""
    parser.add_argument(
        "--reject-below",
        nargs="?",
        const=REJECT_WITH_MODEL,
        metavar="P",
        help='answer "none of the ten" when the top calibrated score is below P (without P: '
        "the threshold the model was calibrated with, see mgc.calibrate)",
    )


def _disconnect_ray() -> None:
    """Leave a Ray this command connected to before saying how to go on: Ray's driver otherwise
    logs its own shutdown errors after the hint (`task_manager.cc: Failed to push error …`).
    Stops the workers of a local Ray; a cluster's are left running. Ray is only looked up, never
    imported here."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    try:
        ray.shutdown()
    except (Exception, KeyboardInterrupt):  # a second Ctrl-C, or Ray already half down
        pass


def _stop_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`) stops the way Ctrl-C does


def run_command(body: Callable[[], int], on_interrupt: str | Callable[[], str] = "") -> int:
    """Run a command's body: user errors → `error: …` on stderr and status 2; Ctrl-C or SIGTERM
    → the way to continue (when there is one) and status 130. Checkpoints and caches are written
    atomically, so a stop leaves nothing half-written where a later run would read it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_as_interrupt)
    try:
        return body()
    except USER_ERRORS as exc:
        # One line, even when a library's message spans several.
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _disconnect_ray()
        hint = on_interrupt() if callable(on_interrupt) else on_interrupt
        print(f"\ninterrupted{': ' + hint if hint else ''}", file=sys.stderr)
        return 130
