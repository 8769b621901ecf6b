"""The Telegram side of the genre bot: python-telegram-bot handlers around `predict_one`.

The model is loaded once and shared. Classification runs in a small thread pool, off the event
loop, so one person's long file does not hold up anyone else's reply; the pool's size bounds
how many files are decoded at once (each one a segment at a time, as `mgc.serve.predict` does).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telegram import Bot, BotCommand, Message, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from mgc.core.device import FastPath
from mgc.models.bundle import Bundle
from mgc.models.inference import Predictor
from mgc.serve.bot.core import (
    DOWNLOAD_FAILED_TEXT,
    HELP_TEXT,
    INTERNAL_ERROR_TEXT,
    MAX_DOWNLOAD_BYTES,
    NOT_AUDIO_HINT,
    TELEGRAM_API,
    RateLimiter,
    api_urls,
    audio_suffix,
    error_text,
    not_audio_text,
    plain_reason,
    result_text,
    slow_down_text,
    too_big,
    too_big_text,
)
from mgc.serve.predict import Options, model_id, predict_one

log = logging.getLogger(__name__)

COMMANDS = [("start", "What this bot does"), ("help", "What to send")]


@dataclass
class BotSettings:
    per_minute: int = 5  # files one chat may send per minute before hearing "slow down"
    concurrent_updates: int = 32  # messages handled at once (downloads, replies, waiting)
    max_bytes: int = MAX_DOWNLOAD_BYTES
    download_timeout_s: float = 60.0
    tmp_dir: Path | None = None  # uploads live here while classified; None: the system's


class GenreService:
    """The model, loaded once, and the threads files are classified in."""

    def __init__(
        self,
        bundle: Bundle,
        bundle_path: Path,
        workers: int = 2,
        fast: FastPath | None = None,
        reject_below: float | None = None,
    ):
        self.predictor = Predictor(bundle, fast)
        # Built now rather than raced for by the first two files.
        _ = self.predictor.frontend.logmel_module
        self.model_id = model_id(bundle, bundle_path)
        # reject_below: "none of the ten" below this top score (see mgc.serve.predict).
        self.options = Options(top_k=min(3, len(bundle.genres)), reject_below=reject_below)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mgc-bot")

    async def classify(self, path: Path) -> dict[str, Any]:
        """`predict_one`'s row for the file, exactly what `python -m mgc.predict` would say."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, predict_one, self.predictor, path, self.model_id, self.options
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Attachment:
    """The file a message carries, as far as the bot cares."""

    file_id: str
    file_size: int | None
    file_name: str | None
    mime_type: str | None
    suffix: str | None  # what to save it as; None: not a format mgc decodes

    @classmethod
    def from_message(cls, message: Message) -> Attachment | None:
        if message.voice:
            v = message.voice
            # Voice notes are Ogg/Opus from the apps; bots may also send MP3 or M4A ones.
            suffix = audio_suffix(None, v.mime_type) or ".ogg"
            return cls(v.file_id, v.file_size, None, v.mime_type, suffix)
        if message.audio:
            a = message.audio
            # Telegram already judged it audio: an unknown type is still tried, the decoders
            # go by the content.
            suffix = audio_suffix(a.file_name, a.mime_type) or ""
            return cls(a.file_id, a.file_size, a.file_name, a.mime_type, suffix)
        if message.document:
            d = message.document
            suffix = audio_suffix(d.file_name, d.mime_type)
            return cls(d.file_id, d.file_size, d.file_name, d.mime_type, suffix)
        return None


class GenreBot:
    """Handlers: /start and /help, audio in any form, everything else gets a hint."""

    def __init__(self, service: GenreService, settings: BotSettings | None = None):
        self.service = service
        self.settings = settings or BotSettings()
        self.limiter = RateLimiter(self.settings.per_minute, 60.0)

    def add_handlers(self, app: Application) -> None:
        new_message = filters.UpdateType.MESSAGE  # edits of old messages are not new files
        app.add_handler(CommandHandler(["start", "help"], self.on_help))
        app.add_handler(
            MessageHandler(
                new_message & (filters.AUDIO | filters.VOICE | filters.Document.ALL), self.on_file
            )
        )
        # A hint for anything else, in private chats only: in a group it would answer chatter.
        app.add_handler(MessageHandler(new_message & filters.ChatType.PRIVATE, self.on_other))
        app.add_error_handler(self.on_error)

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(HELP_TEXT)

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(NOT_AUDIO_HINT)

    async def on_file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        att = Attachment.from_message(message)
        if att is None:
            return
        # Cheap refusals first; only files that would really be downloaded count towards the
        # rate limit.
        if att.suffix is None:
            await message.reply_text(not_audio_text(att.file_name, att.mime_type))
            return
        if too_big(att.file_size, self.settings.max_bytes):
            await message.reply_text(too_big_text(att.file_size, self.settings.max_bytes))
            return
        wait = self.limiter.check(message.chat_id)
        if wait > 0:
            await message.reply_text(slow_down_text(wait, self.limiter.limit, self.limiter.per_s))
            return
        try:
            await message.chat.send_action(ChatAction.TYPING)
        except TelegramError:
            pass  # only a courtesy
        try:
            reply = await self.classify(context.bot, att)
        except Exception:
            log.exception("chat %s: classifying a file failed", message.chat_id)
            reply = INTERNAL_ERROR_TEXT
        await message.reply_text(reply)

    async def classify(self, bot: Bot, att: Attachment) -> str:
        """Download into a temporary folder, classify, delete; the reply text."""
        limit = self.settings.max_bytes
        with tempfile.TemporaryDirectory(prefix="mgc-bot-", dir=self.settings.tmp_dir) as tmp:
            # A fixed name: the sender's file name never becomes part of a path here.
            path = Path(tmp) / f"upload{att.suffix}"
            try:
                tg_file = await bot.get_file(att.file_id)
                if too_big(tg_file.file_size, limit):
                    return too_big_text(tg_file.file_size, limit)
                await tg_file.download_to_drive(path, read_timeout=self.settings.download_timeout_s)
            except BadRequest as exc:
                if "too big" in exc.message.lower():  # size unknown up front, refused by getFile
                    return too_big_text(att.file_size, limit)
                log.warning("download refused: %s", exc.message)
                return DOWNLOAD_FAILED_TEXT
            except TelegramError as exc:
                log.warning("download failed: %s: %s", type(exc).__name__, exc.message)
                return DOWNLOAD_FAILED_TEXT
            started = time.perf_counter()
            row = await self.service.classify(path)
            if "error" in row:
                log.info("file not classified: %s", row["error"])
                reason = plain_reason(row["error"], path, att.file_name)
                return error_text(reason, att.file_name)
        log.info(
            "classified %.1f s of audio in %.1f s: %s",
            row["duration_s"],
            time.perf_counter() - started,
            row["top_k"][0]["label"],
        )
        return result_text(row)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        # Tracebacks go to the log (with the token masked there); the bot carries on.
        log.error("handling an update failed", exc_info=context.error)

    async def post_init(self, app: Application) -> None:
        try:
            await app.bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS])
        except TelegramError as exc:  # the menu is a nicety; the bot works without it
            log.warning("could not set the command menu: %s", exc.message)


def build_application(
    token: str, genre_bot: GenreBot, api_server: str = TELEGRAM_API
) -> Application:
    """The polling Application for `genre_bot`, talking to the Bot API at `api_server`."""
    base_url, base_file_url = api_urls(api_server)
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .concurrent_updates(genre_bot.settings.concurrent_updates)
        .post_init(genre_bot.post_init)
        .build()
    )
    genre_bot.add_handlers(app)
    return app
