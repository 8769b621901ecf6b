"""`python -m mgc.web [--model RUN_OR_BUNDLE] [--port P]`: the genre classifier as a web page
on this machine (http://127.0.0.1:P), served by Streamlit until Ctrl-C.

Streamlit runs in this process, headless: no browser is opened, no usage statistics are sent,
uploads are capped at the page's limit. The model folder reaches the page as its `--model`
script argument, so `streamlit run mgc/web/app.py -- --model X` is the same thing by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgc.core.cli import add_reject_option
from mgc.serve.web.core import MAX_UPLOAD_MB, has_bundle, missing_model_message

APP = Path(__file__).resolve().parent / "serve" / "web" / "app.py"
HOST = "127.0.0.1"  # this machine only: the page has no login, and uploads are files on disk
DEFAULT_PORT = 8501


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgc.web", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a bundle folder or run folder (default: the bundled model)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    add_reject_option(p)
    return p


def streamlit_args(model: Path, port: int, reject: str | None = None) -> list[str]:
    """The `streamlit` command line (without the program name) that serves the page."""
    return [
        "run",
        str(APP),
        f"--server.address={HOST}",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        f"--server.maxUploadSize={MAX_UPLOAD_MB}",
        # A served page, not a script being edited: no file watching (it costs a thread and
        # CPU), no developer menu for visitors.
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--client.toolbarMode=viewer",
        "--",
        "--model",
        str(model),
        *(["--reject-below", reject] if reject is not None else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    from mgc.serve.predict import BUNDLED_MODEL

    model = Path(args.model) if args.model else BUNDLED_MODEL
    # Checked here so a wrong path is one line in the terminal, not a page that only says so.
    if not has_bundle(model):
        print(f"error: {missing_model_message(model)}", file=sys.stderr)
        return 2
    print(f"mgc.serve.web: serving {model.resolve()} at http://{HOST}:{args.port}", file=sys.stderr)

    from streamlit.web import cli as streamlit_cli

    # Click's entry point ends the process itself (SystemExit with Streamlit's status).
    streamlit_cli.main(
        args=streamlit_args(model.resolve(), args.port, args.reject_below), prog_name="streamlit"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
