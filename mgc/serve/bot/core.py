"""The bot's decisions that need no network: which uploads are audio, what to say back, and how
often one chat may ask. Handlers in `mgc.serve.bot.app` only glue these to Telegram."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from mgc.core.audio import AUDIO_EXTENSIONS

TELEGRAM_API = "https://api.telegram.org"

# The cloud Bot API hands bots files of at most 20 MB (getFile fails above that), so larger
# uploads are turned away before any download is tried.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024

# What clients put in `mime_type` for the formats mgc decodes; used when a document's name has
# no telling extension (files forwarded from other apps often have none).
MIME_SUFFIXES = {
    "audio/wav": ".wav",
    "audio/wave": ".wav",
    "audio/x-wav": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mpeg3": ".mp3",
    "audio/x-mpeg-3": ".mp3",
    "audio/ogg": ".ogg",
    "audio/vorbis": ".ogg",
    "audio/opus": ".opus",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/mp4": ".m4a",
    "audio/m4a": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/aac": ".aac",
    "audio/x-aac": ".aac",
    "audio/aiff": ".aiff",
    "audio/x-aiff": ".aiff",
    "audio/basic": ".au",
    "audio/webm": ".webm",
}

FORMATS_TEXT = ", ".join(s.lstrip(".").upper() for s in AUDIO_EXTENSIONS)


def audio_suffix(file_name: str | None, mime_type: str | None) -> str | None:
    """The extension to store an upload under, or None when neither its name nor its MIME type
    says it is a format mgc decodes."""
    if file_name:
        suffix = PurePath(file_name).suffix.lower()
        if suffix in AUDIO_EXTENSIONS:
            return suffix
    if mime_type:
        return MIME_SUFFIXES.get(mime_type.split(";")[0].strip().lower())
    return None


def api_urls(api_server: str) -> tuple[str, str]:
    """(bot URL, file URL) prefixes under a Bot API server root; the library appends the token.
    Telegram's, a self-hosted telegram-bot-api and a test's fake all lay them out this way."""
    root = api_server.rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


def too_big(file_size: int | None, limit: int = MAX_DOWNLOAD_BYTES) -> bool:
    # An unknown size is tried: getFile itself refuses files over the limit.
    return file_size is not None and file_size > limit


# ---------------------------------------------------------------------------------------------
# Reply texts

HELP_TEXT = (
    "Send me a piece of music and I'll tell you its genre.\n\n"
    "You can send an audio file, a voice note, or a document in one of these formats: "
    f"{FORMATS_TEXT}. Files up to 20 MB; a 30-second clip is plenty.\n\n"
    "I answer with the most likely genre and the three best guesses with their "
    "probabilities.\n\n"
    "/help shows this message again."
)

NOT_AUDIO_HINT = "Send me an audio file, a voice note or an audio document and I'll name its genre."


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):.1f} MB"


def format_duration(seconds: float) -> str:
    """12.3 s, 3:05, 1:02:03: seconds for clips, clock time for songs and mixes."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def result_text(row: dict[str, Any]) -> str:
    """What the bot answers for one `mgc.serve.predict.predict_one` row that has no `error`."""
    top = row["top_k"]
    if row.get("answer", top[0]["label"]) != top[0]["label"]:  # "none of the ten"
        lines = [
            f"Genre: none of the ten I know (closest: {top[0]['label']}, "
            f"{100 * top[0]['score']:.1f}%, below my {100 * row['reject_below']:.0f}% bar)",
            "",
        ]
    else:
        lines = [f"Genre: {top[0]['label']} ({100 * top[0]['score']:.1f}%)", ""]
    lines.append(f"Top {len(top)}:" if len(top) > 1 else "Scores:")
    lines += [f"{i}. {t['label']}: {100 * t['score']:.1f}%" for i, t in enumerate(top, 1)]
    lines += ["", f"Length: {format_duration(row['duration_s'])}"]
    if "note" in row:
        lines.append(f"Note: {row['note']}, so the answer is less certain.")
    return "\n".join(lines)


def plain_reason(reason: str, saved_as: str | PurePath, shown_as: str | None) -> str:
    """A decoder's reason as the sender should read it: the server's temporary path replaced
    by the name they sent."""
    saved = str(saved_as)
    reason = reason.replace(saved, f"“{shown_as}”" if shown_as else "the file")
    return reason.replace(str(PurePath(saved).parent), "")


def error_text(reason: str, shown_as: str | None = None) -> str:
    """A polite answer for a file that could not be classified, the reason in plain words."""
    what = f"“{shown_as}”" if shown_as else "that file"
    return (
        f"Sorry, I couldn't get any music out of {what}: {reason.rstrip('.')}.\n"
        f"Please send an audio file in one of these formats: {FORMATS_TEXT}."
    )


def not_audio_text(file_name: str | None, mime_type: str | None) -> str:
    what = f"“{file_name}”" if file_name else f"a {mime_type} file" if mime_type else "that file"
    return (
        f"Sorry, {what} doesn't look like audio I can read. "
        f"I understand these formats: {FORMATS_TEXT}."
    )


def too_big_text(file_size: int | None, limit: int = MAX_DOWNLOAD_BYTES) -> str:
    size = f"That file is {megabytes(file_size)}" if file_size else "That file is too large"
    return (
        f"{size}, but bots can only download files up to {megabytes(limit)}. "
        "Please send a shorter clip or a compressed version (MP3 or OGG): 30 seconds is enough."
    )


def slow_down_text(wait_s: float, limit: int, per_s: float) -> str:
    per = "minute" if per_s == 60 else f"{per_s:g} seconds"
    return (
        f"Slow down, please: I take at most {limit} files per {per} from one chat. "
        f"Try again in {max(1, math.ceil(wait_s))} s."
    )


DOWNLOAD_FAILED_TEXT = "Sorry, I couldn't download that file from Telegram. Please try again."
INTERNAL_ERROR_TEXT = "Sorry, something went wrong on my side with that file. Please try again."


# ---------------------------------------------------------------------------------------------
# Rate limit


class RateLimiter:
    """At most `limit` events per `per_s` seconds for each key (a chat), over a sliding window.

    `check` both asks and records, so callers on one event loop cannot race between the two.
    """

    def __init__(
        self, limit: int, per_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        if limit < 1 or per_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and per_s > 0")
        self.limit = limit
        self.per_s = per_s
        self.clock = clock
        self._events: dict[object, deque[float]] = {}
        self._next_sweep = clock() + per_s

    def check(self, key: object) -> float:
        """0 when the event may go ahead (and it is counted), else the seconds until it may."""
        now = self.clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.per_s:
            events.popleft()
        if len(events) >= self.limit:
            return events[0] + self.per_s - now
        events.append(now)
        self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        # Chats that have gone quiet would otherwise be kept forever; one sweep per window
        # keeps `check` cheap however many chats there are.
        if now >= self._next_sweep:
            self._next_sweep = now + self.per_s
            idle = [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.per_s]
            for k in idle:
                del self._events[k]
