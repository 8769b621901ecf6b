"""`python -m mgc.bot [--model BUNDLE] [--token-file PATH]`: run the genre bot on Telegram.

The bot long-polls the Bot API, so it needs no public address. The token comes from
$TELEGRAM_BOT_TOKEN or a file, never from the command line, where any user of the machine
could read it in the process list. Exit status: 0 after Ctrl-C or SIGTERM, 2 on bad usage
(no token, a rejected token, no model), 1 when the Bot API cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mgc.core.cli import add_reject_option
from mgc.serve.bot.core import TELEGRAM_API
from mgc.serve.bot.tokens import (
    TOKEN_ENV,
    TokenError,
    check_token,
    quiet_http_logs,
    read_token,
    redact,
    redacted_logs,
    token_file_is_shared,
)

log = logging.getLogger("mgc.bot")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mgc.bot",
        description="Telegram bot that names the genre of the audio people send it.",
        epilog=f"The bot token is read from ${TOKEN_ENV}, or from --token-file.",
    )
    p.add_argument(
        "--model",
        metavar="BUNDLE",
        help="a bundle folder or run folder (default: the bundled model)",
    )
    p.add_argument(
        "--token-file", metavar="PATH", help=f"file holding the token (else ${TOKEN_ENV})"
    )
    p.add_argument(
        "--per-minute",
        type=int,
        default=5,
        metavar="N",
        help="files one chat may send per minute before being asked to slow down (default 5)",
    )
    p.add_argument(
        "--workers", type=int, default=2, metavar="N", help="files classified at once (default 2)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    add_reject_option(p)
    p.add_argument(
        "--api-server",
        default=TELEGRAM_API,
        metavar="URL",
        help="Bot API server root, for a self-hosted telegram-bot-api (default: Telegram's)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (token masked)")
    return p


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_http_logs()


def telegram_failure(exc: Exception, args: argparse.Namespace, token: str) -> int:
    """One line on stderr for a Bot API failure; the exit status."""
    from telegram.error import InvalidToken

    if isinstance(exc, InvalidToken):
        source = args.token_file or f"${TOKEN_ENV}"
        print(f"error: the Bot API rejected the token from {source}", file=sys.stderr)
        return 2
    # The library's messages may quote URLs; the token is masked all the same.
    why = redact(" ".join(str(exc).split()), token)
    print(f"error: cannot reach the Bot API at {args.api_server}: {why}", file=sys.stderr)
    return 1


def serve(args: argparse.Namespace, token: str, username: str) -> int:
    import torch
    from telegram import Update
    from telegram.error import TelegramError

    from mgc.core.device import choose_fast_path, select_device
    from mgc.models.bundle import load_bundle
    from mgc.serve.bot.app import BotSettings, GenreBot, GenreService, build_application
    from mgc.serve.predict import BUNDLED_MODEL, UsageError, reject_threshold

    bundle_path = Path(args.model) if args.model else BUNDLED_MODEL
    bundle = load_bundle(bundle_path)
    try:
        reject_below = reject_threshold(args.reject_below, bundle, bundle_path)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fast = choose_fast_path(select_device(args.device))
    # Each worker's own torch threads: together they should not outnumber the cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    service = GenreService(bundle, bundle_path, args.workers, fast, reject_below)
    settings = BotSettings(per_minute=args.per_minute)
    app = build_application(token, GenreBot(service, settings), args.api_server)
    log.info("@%s ready with model %s (%s)", username, service.model_id, ", ".join(bundle.genres))
    try:
        # Stops on Ctrl-C, SIGTERM or SIGABRT, finishing the updates in hand.
        app.run_polling(allowed_updates=[Update.MESSAGE])
    except TelegramError as exc:
        return telegram_failure(exc, args, token)
    finally:
        service.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_minute < 1:
        parser.error("--per-minute must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        token = read_token(args.token_file)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with redacted_logs(token):
        configure_logging(args.verbose)
        if args.token_file and token_file_is_shared(args.token_file):
            log.warning("%s is readable by other users: chmod 600 it", args.token_file)
        # The token is tried before torch and the model load: a missing, rejected or
        # unreachable one is reported in a second rather than after the model is up.
        import asyncio

        from telegram.error import TelegramError

        try:
            username = asyncio.run(check_token(token, args.api_server))
        except TelegramError as exc:
            return telegram_failure(exc, args, token)
        from mgc.core.cli import run_command

        return run_command(lambda: serve(args, token, username))


if __name__ == "__main__":
    raise SystemExit(main())
