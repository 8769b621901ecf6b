"""Where the bot token comes from, and how it is kept out of everything the bot writes.

The token is the bot's password and sits inside every Bot API URL, so two guards stand between
it and the logs: the HTTP client's request lines (which print those URLs at INFO) are switched
off, and every log record made while the bot runs has the token masked before any handler, the
console's or a test's, sees it. Error lines printed outside logging go through `redact`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
MASK = "<bot-token>"
# Libraries that log request URLs, and so the token, below WARNING.
HTTP_LOGGERS = ("httpx", "httpcore")

log = logging.getLogger(__name__)


class TokenError(ValueError):
    """No usable token: a one-line usage error (exit status 2). Never contains the token."""


def read_token(token_file: str | Path | None, environ: Mapping[str, str] = os.environ) -> str:
    """The token from `token_file` when given, else from $TELEGRAM_BOT_TOKEN."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise TokenError(f"cannot read the token file {token_file}: {why}") from None
        if not token:
            raise TokenError(f"the token file {token_file} is empty")
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise TokenError(f"no bot token: set {TOKEN_ENV} or pass --token-file PATH")
    if any(c.isspace() for c in token):
        # Said without quoting the value: a wrong file could still hold someone's secret.
        raise TokenError("the bot token must be a single word (is the token file right?)")
    return token


def token_file_is_shared(token_file: str | Path) -> bool:
    """Whether users other than the owner may read the token file."""
    try:
        return bool(Path(token_file).stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def secret_parts(token: str) -> list[str]:
    """The strings to mask: the whole token and, as it may appear URL-encoded or split at its
    colon, the secret after the bot id. Longest first, so the whole token masks as one."""
    parts = [token]
    _, colon, secret = token.partition(":")
    if colon and len(secret) >= 8:
        parts.append(secret)
    return parts


def redact(text: str, token: str) -> str:
    for part in secret_parts(token):
        text = text.replace(part, MASK)
    return text


class RedactToken(logging.Filter):
    """Masks the token in a record's message, exception text and stack; never drops a record."""

    def __init__(self, token: str):
        super().__init__()
        self.parts = secret_parts(token)

    def _mask(self, text: str) -> str:
        for part in self.parts:
            text = text.replace(part, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, masked, as plain text
            message = f"{record.msg} (arguments: {record.args!r})"
        # Frozen into a string, token or not: a record keeps references to its arguments, and
        # the library logs a dict that it then fills with the token-bearing file URL, so a
        # handler formatting it later would print what was not there when it was checked.
        record.msg, record.args = self._mask(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback prints masked.
            record.exc_text = self._mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True


@contextmanager
def redacted_logs(token: str) -> Iterator[RedactToken]:
    """Mask the token in every log record made inside the block, whichever logger makes it and
    whichever handlers (added before or after) receive it.

    A filter on a logger sees only that logger's own records and a filter on a handler only
    that handler's, so the guard sits in the record factory, where every record is made.
    """
    guard = RedactToken(token)
    previous = logging.getLogRecordFactory()

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        guard.filter(record)
        return record

    logging.setLogRecordFactory(make_record)
    try:
        yield guard
    finally:
        if logging.getLogRecordFactory() is make_record:
            logging.setLogRecordFactory(previous)


async def check_token(token: str, api_server: str) -> str:
    """The bot's @username; raises telegram.error.InvalidToken or NetworkError.

    A throwaway Bot asks once before anything else starts: the Application's own start-up
    logs a traceback for a rejected token, where one line says all there is to say.
    """
    from telegram import Bot

    from mgc.serve.bot.core import api_urls

    base_url, base_file_url = api_urls(api_server)
    async with Bot(token, base_url=base_url, base_file_url=base_file_url) as bot:
        return bot.username


def quiet_http_logs() -> None:
    """httpx logs every request with its URL, token included, at INFO: keep it to warnings."""
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
