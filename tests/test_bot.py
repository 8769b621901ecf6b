"""The Telegram bot (`mgc.serve.bot`): its pure parts, and the whole bot against a fake Bot API.

The fake is a stdlib HTTP server on 127.0.0.1 that answers the calls python-telegram-bot makes
(getMe, getUpdates, getFile, file downloads, sendMessage, ...), so the real library runs end
to end with no network. Updates are fed in stages, each once its replies are in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import numpy as np
import pytest
import soundfile as sf
from conftest import gtzan_dir, tone, write_audio

from mgc.serve.bot.core import (
    HELP_TEXT,
    MAX_DOWNLOAD_BYTES,
    NOT_AUDIO_HINT,
    RateLimiter,
    api_urls,
    audio_suffix,
    error_text,
    format_duration,
    not_audio_text,
    plain_reason,
    result_text,
    slow_down_text,
    too_big,
    too_big_text,
)
from mgc.serve.bot.tokens import (
    MASK,
    RedactToken,
    TokenError,
    quiet_http_logs,
    read_token,
    redact,
    redacted_logs,
)

# Shaped like a real token (bot id, colon, 35 characters) so that nothing treats it specially.
TOKEN = "7012345678:AAFake-Token_ForTestsOnly0123456789xyz"
SECRET = TOKEN.split(":", 1)[1]
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("name", "mime", "suffix"),
    [
        ("song.MP3", None, ".mp3"),
        ("take.flac", "application/octet-stream", ".flac"),
        ("clip.wav", "audio/x-wav", ".wav"),
        ("old.au", None, ".au"),
        ("track.m4a", None, ".m4a"),
        (None, "audio/ogg", ".ogg"),
        ("forwarded", "audio/mpeg; charset=binary", ".mp3"),
        ("notes.pdf", "application/pdf", None),
        ("photo.jpg", "image/jpeg", None),
        (None, None, None),
    ],
)
def test_audio_suffix(name, mime, suffix):
    assert audio_suffix(name, mime) == suffix


def test_too_big_and_its_text():
    assert not too_big(None)  # unknown: getFile decides
    assert not too_big(MAX_DOWNLOAD_BYTES)
    assert too_big(MAX_DOWNLOAD_BYTES + 1)
    text = too_big_text(25 * 1024 * 1024)
    assert "25.0 MB" in text and "20.0 MB" in text


def test_api_urls():
    assert api_urls("http://127.0.0.1:8081/") == (
        "http://127.0.0.1:8081/bot",
        "http://127.0.0.1:8081/file/bot",
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(3.04, "3.0 s"), (59.94, "59.9 s"), (185, "3:05"), (3723, "1:02:03")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


ROW = {
    "file": "x.wav",
    "model": "m",
    "duration_s": 30.013,
    "top_k": [
        {"label": "rock", "score": 0.62149},
        {"label": "metal", "score": 0.2},
        {"label": "blues", "score": 0.05},
    ],
    "probabilities": {"rock": 0.62149, "metal": 0.2, "blues": 0.05},
}


def test_result_text():
    assert result_text(ROW) == (
        "Genre: rock (62.1%)\n\nTop 3:\n1. rock: 62.1%\n2. metal: 20.0%\n3. blues: 5.0%\n\n"
        "Length: 30.0 s"
    )
    padded = result_text({**ROW, "note": "shorter than one 3 s window: padded"})
    assert padded.endswith(
        "Note: shorter than one 3 s window: padded, so the answer is less certain."
    )


def test_refusal_texts():
    assert "“song.mp3”" in error_text("cannot decode (Format not recognised)", "song.mp3")
    assert error_text("no audio samples.").startswith(
        "Sorry, I couldn't get any music out of that file: no audio samples.\n"
    )
    assert "“notes.pdf”" in not_audio_text("notes.pdf", "application/pdf")
    assert "application/pdf" in not_audio_text(None, "application/pdf")
    text = slow_down_text(41.2, 5, 60.0)
    assert text.startswith("Slow down") and "5 files per minute" in text and "42 s" in text


def test_plain_reason_hides_server_paths():
    saved = "/tmp/mgc-bot-x1/upload.mp3"
    reason = f"cannot decode (Error: {saved}: Invalid data found when processing input)."
    assert plain_reason(reason, saved, "song.mp3") == (
        "cannot decode (Error: “song.mp3”: Invalid data found when processing input)."
    )
    assert "/tmp/mgc-bot-x1" not in plain_reason("see /tmp/mgc-bot-x1", saved, None)


def test_rate_limiter_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, per_s=60.0, clock=lambda: now[0])
    assert limiter.check("a") == 0 and limiter.check("a") == 0
    assert limiter.check("a") == pytest.approx(60.0)  # full: the first slot frees at t=60
    assert limiter.check("b") == 0  # other chats are not affected
    now[0] = 30.0
    assert limiter.check("a") == pytest.approx(30.0)  # refusals are not counted
    now[0] = 60.0  # both slots of t=0 free again
    assert limiter.check("a") == 0 and limiter.check("a") == 0
    assert limiter.check("a") == pytest.approx(60.0)
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_rate_limiter_forgets_quiet_chats():
    now = [0.0]
    limiter = RateLimiter(1, per_s=10.0, clock=lambda: now[0])
    for chat in range(100):
        limiter.check(chat)
    now[0] = 25.0
    limiter.check("new")
    assert list(limiter._events) == ["new"]


# ---------------------------------------------------------------------------------------------
# Token


def test_read_token_from_env_and_file(tmp_path):
    assert read_token(None, {"TELEGRAM_BOT_TOKEN": f" {TOKEN}\n"}) == TOKEN
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert read_token(f, {"TELEGRAM_BOT_TOKEN": "other:one"}) == TOKEN  # the file wins
    with pytest.raises(TokenError, match="TELEGRAM_BOT_TOKEN"):
        read_token(None, {})
    with pytest.raises(TokenError, match="cannot read"):
        read_token(tmp_path / "missing", {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenError, match="empty"):
        read_token(tmp_path / "empty", {})
    (tmp_path / "two").write_text(f"{TOKEN}\n{TOKEN}\n")
    with pytest.raises(TokenError) as err:
        read_token(tmp_path / "two", {})
    assert TOKEN not in str(err.value)


def test_redact_masks_whole_token_and_its_secret():
    assert redact(f"GET /bot{TOKEN}/getMe", TOKEN) == f"GET /bot{MASK}/getMe"
    assert SECRET not in redact(f"/bot7012345678%3A{SECRET}/getMe", TOKEN)


def test_redact_filter_covers_args_tracebacks_and_stacks():
    guard = RedactToken(TOKEN)
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "url %s", (f"https://h/bot{TOKEN}/getMe",), exc_info
    )
    record.stack_info = f"Stack: {TOKEN}"
    assert guard.filter(record) is True
    text = logging.Formatter().format(record)
    assert TOKEN not in text and SECRET not in text and MASK in text


def test_redact_filter_freezes_arguments_changed_later():
    # python-telegram-bot logs getFile's result dict, then writes the file URL into it.
    result = {"file_path": "music/file_1.ogg"}
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "returned %s", (result,), None)
    RedactToken(TOKEN).filter(record)
    result["file_path"] = f"http://h/file/bot{TOKEN}/music/file_1.ogg"
    assert TOKEN not in logging.Formatter().format(record)
    bad = logging.LogRecord("x", logging.DEBUG, __file__, 1, "%d", (TOKEN,), None)
    RedactToken(TOKEN).filter(bad)
    assert TOKEN not in logging.Formatter().format(bad)


def test_redacted_logs_reach_every_handler_and_undo(caplog):
    previous = logging.getLogRecordFactory()
    caplog.set_level(logging.DEBUG)
    with redacted_logs(TOKEN):
        # A handler added after the guard, on another logger, still gets masked records.
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda r: seen.append(r.getMessage())
        other = logging.getLogger("test_bot.elsewhere")
        other.addHandler(handler)
        try:
            other.debug("HTTP Request: POST http://x/bot%s/getUpdates", TOKEN)
        finally:
            other.removeHandler(handler)
    assert logging.getLogRecordFactory() is previous
    assert seen == [f"HTTP Request: POST http://x/bot{MASK}/getUpdates"]
    assert TOKEN not in caplog.text


def test_quiet_http_logs():
    levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    try:
        quiet_http_logs()
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------------------------------------
# A fake Bot API


class FakeBotApi:
    """Just enough of the Bot API for python-telegram-bot's polling bot; records what it was
    asked. `accept=False` answers every call as Telegram does a revoked token."""

    BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Genre", "username": "genre_test_bot"}

    def __init__(self, token: str, accept: bool = True):
        self.token = token
        self.accept = accept
        self.cond = threading.Condition()
        self.updates: list[dict[str, Any]] = []
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id → (file_path, content)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[dict[str, Any]] = []  # sendMessage parameters
        self.downloads: list[str] = []  # file_ids fetched
        self._update_id = 0
        self._message_id = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeBotApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # --- what a test does

    def add_file(self, content: bytes, kind: str, suffix: str) -> dict[str, Any]:
        with self.cond:
            n = len(self.files) + 1
            file_id = f"FILE{n}"
            self.files[file_id] = (f"{kind}/file_{n}{suffix}", content)
        return {"file_id": file_id, "file_unique_id": f"U{n}", "file_size": len(content)}

    def push(self, chat_id: int, **content: Any) -> int:
        """Queue a private-chat message from a user; its message_id."""
        return self.push_many([(chat_id, content)])[0]

    def push_many(self, messages: list[tuple[int, dict[str, Any]]]) -> list[int]:
        """Queue several messages to arrive in one getUpdates answer."""
        ids = []
        with self.cond:
            for chat_id, content in messages:
                self._update_id += 1
                self._message_id += 1
                user = {"id": chat_id, "is_bot": False, "first_name": f"User{chat_id}"}
                message = {
                    "message_id": self._message_id,
                    "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private", "first_name": user["first_name"]},
                    "from": user,
                    **content,
                }
                self.updates.append({"update_id": self._update_id, "message": message})
                ids.append(self._message_id)
            self.cond.notify_all()
        return ids

    def replies(self, chat_id: int) -> list[str]:
        with self.cond:
            return [m["text"] for m in self.sent if int(m["chat_id"]) == chat_id]

    def called(self, method: str) -> list[dict[str, Any]]:
        with self.cond:
            return [p for m, p in self.calls if m == method]

    # --- serving

    def respond(self, path: str, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        path = unquote(path)  # file URLs come percent-encoded, the token's colon too
        if path.startswith("/file/bot"):
            token, _, file_path = path[len("/file/bot") :].partition("/")
            if token != self.token or not self.accept:
                return 401, "text/plain", b"Unauthorized"
            with self.cond:
                for file_id, (stored, content) in self.files.items():
                    if stored == file_path:
                        self.downloads.append(file_id)
                        return 200, "application/octet-stream", content
            return 404, "text/plain", b"Not Found"
        if not path.startswith("/bot"):
            return 404, "text/plain", b"Not Found"
        token, _, method = path[len("/bot") :].partition("/")
        if token != self.token or not self.accept:
            return self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        params = self._params(content_type, body)
        with self.cond:
            self.calls.append((method, params))
        status, answer = self.answer(method, params)
        return self._json(status, answer)

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        def ok(result: Any) -> tuple[int, dict[str, Any]]:
            return 200, {"ok": True, "result": result}

        if method == "getMe":
            return ok(self.BOT_USER)
        if method in ("deleteWebhook", "setMyCommands", "sendChatAction"):
            return ok(True)
        if method == "getUpdates":
            offset = int(params.get("offset", 0))
            # Long poll, but never long: the bot's shutdown waits for the poll in flight.
            wait = min(float(params.get("timeout", 0)), 0.5)
            with self.cond:
                self.cond.wait_for(
                    lambda: any(u["update_id"] >= offset for u in self.updates), wait
                )
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                return ok(list(self.updates))
        if method == "getFile":
            with self.cond:
                found = self.files.get(params.get("file_id", ""))
            if found is None:
                return 400, {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: invalid file_id",
                }
            file_path, content = found
            return ok(
                {
                    "file_id": params["file_id"],
                    "file_unique_id": "U" + params["file_id"],
                    "file_size": len(content),
                    "file_path": file_path,
                }
            )
        if method == "sendMessage":
            with self.cond:
                self.sent.append(params)
                self._message_id += 1
                message_id = self._message_id
                self.cond.notify_all()
            chat_id = int(params["chat_id"])
            return ok(
                {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private"},
                    "from": self.BOT_USER,
                    "text": params["text"],
                }
            )
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    @staticmethod
    def _params(content_type: str, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        if "json" in content_type:
            return json.loads(body)
        # python-telegram-bot posts a form whose non-string values are JSON-encoded.
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))

    @staticmethod
    def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(payload).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # httpx keeps its connections open

            def log_message(self, format: str, *args: Any) -> None:
                pass  # request lines hold the token; the test checks stderr for it

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, ctype, payload = api.respond(
                    self.path, self.headers.get("Content-Type", ""), body
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a long poll the bot gave up on as it stopped

        return Handler


def command(text: str) -> dict[str, Any]:
    return {"text": text, "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}]}


def upload(api: FakeBotApi, clip: tuple[Path, str], kind: str = "documents") -> dict[str, Any]:
    """A clip stored on the fake server: the fields of its audio/document object."""
    path, mime = clip
    info = api.add_file(path.read_bytes(), kind, path.suffix)
    return {"file_name": path.name, "mime_type": mime, **info}


def run_app(app: Any, conversation: Callable[[], Any], timeout: float = 300) -> None:
    """Poll with `app` while `conversation()` feeds updates and waits for replies; then stop
    it the way run_polling does."""

    async def scenario() -> None:
        async with app:
            await app.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=["message"])
            await app.start()
            try:
                await conversation()
            finally:
                await app.updater.stop()
                await app.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The bot end to end, in this process


@pytest.fixture
def clips(tmp_path) -> dict[str, tuple[Path, str]]:
    """name → (file, MIME type): what users send, good and bad."""
    out: dict[str, tuple[Path, str]] = {}
    real = gtzan_dir()
    song = real / "blues" / "blues.00000.ogg" if real else None
    if song is not None and song.is_file():
        out["audio"] = (song, "audio/ogg")
    else:
        out["audio"] = (write_audio(tmp_path / "tone.wav", tone(880, 3.0)), "audio/x-wav")
    voice = tmp_path / "voice.ogg"
    sf.write(voice, tone(220, 2.0, sr=48000), 48000, format="OGG", subtype="OPUS")
    out["voice"] = (voice, "audio/ogg")
    out["flac"] = (
        write_audio(tmp_path / "high.flac", tone(3520, 3.0), format="FLAC"),
        "audio/flac",
    )
    broken = tmp_path / "song.mp3"
    broken.write_bytes(np.random.default_rng(0).bytes(4000))
    out["broken"] = (broken, "audio/mpeg")
    out["short"] = (write_audio(tmp_path / "short.wav", tone(880, 0.5)), "audio/x-wav")
    for i in range(5):
        out[f"burst{i}"] = (
            write_audio(tmp_path / f"burst{i}.wav", tone(220 * (1 + i / 10), 1.5)),
            "audio/x-wav",
        )
    return out


def test_bot_end_to_end(trained_run, clips, tmp_path, caplog, capfd):
    from mgc.core.device import CPU_FP32
    from mgc.models.bundle import load_bundle
    from mgc.models.inference import Predictor
    from mgc.serve.bot.app import BotSettings, GenreBot, GenreService, build_application
    from mgc.serve.predict import Options, model_id, predict_one

    run_dir, _ = trained_run
    bundle = load_bundle(run_dir)
    # What `python -m mgc.predict` says for each clip: the bot must say exactly the same.
    predictor = Predictor(bundle, CPU_FP32)
    expected = {
        name: predict_one(predictor, path, model_id(bundle, run_dir), Options(top_k=3))
        for name, (path, _) in clips.items()
    }
    assert "error" in expected["broken"] and "note" in expected["short"]
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    # Everything at DEBUG, httpx's request lines (URLs with the token) included: the guard in
    # the record factory has to mask them all.
    caplog.set_level(logging.DEBUG)
    service = GenreService(bundle, run_dir, workers=2, fast=CPU_FP32)
    settings = BotSettings(per_minute=3, tmp_dir=uploads)

    def document(name: str, kind: str = "documents") -> dict[str, Any]:
        return upload(api, clips[name], kind)

    async def conversation() -> None:
        # Stage 1: one user each, all at once.
        api.push(1, **command("/start"))
        api.push(2, **command("/help"))
        api.push(3, text="hello")
        api.push(4, audio={"duration": 30, **document("audio", "music")})
        voice = api.add_file(clips["voice"][0].read_bytes(), "voice", ".oga")
        api.push(5, voice={"duration": 2, "mime_type": "audio/ogg", **voice})
        api.push(6, document=document("flac"))
        api.push(
            7,
            document={
                "file_id": "BIGFILE",
                "file_unique_id": "UBIG",
                "file_name": "long_mix.wav",
                "mime_type": "audio/x-wav",
                "file_size": 25 * 1024 * 1024,
            },
        )
        api.push(
            8,
            document={
                "file_name": "notes.pdf",
                "mime_type": "application/pdf",
                **api.add_file(b"%PDF-1.4", "documents", ".pdf"),
            },
        )
        api.push(9, document=document("broken"))
        await wait_until(lambda: all(api.replies(c) for c in range(1, 10)), 120, "stage 1 replies")
        # Stage 2: after the broken file was answered, the same chat sends a short good clip.
        api.push(9, document=document("short"))
        await wait_until(lambda: len(api.replies(9)) == 2, 60, "a reply after the broken file")
        # Stage 3: one chat sends five files at once; the limit is three a minute.
        api.push_many([(10, {"document": document(f"burst{i}")}) for i in range(5)])
        await wait_until(lambda: len(api.replies(10)) == 5, 60, "the burst's replies")

    with FakeBotApi(TOKEN) as api, redacted_logs(TOKEN):
        app = build_application(TOKEN, GenreBot(service, settings), api.url)
        try:
            run_app(app, conversation)
        finally:
            service.close()

    replies = {chat: api.replies(chat) for chat in range(1, 11)}
    assert replies[1] == [HELP_TEXT] and replies[2] == [HELP_TEXT]
    assert replies[3] == [NOT_AUDIO_HINT]
    assert replies[4] == [result_text(expected["audio"])]
    assert replies[5] == [result_text(expected["voice"])]
    assert replies[6] == [result_text(expected["flac"])]
    for text in (replies[4][0], replies[5][0], replies[6][0]):
        lines = text.splitlines()
        assert lines[0].split()[1] in bundle.genres
        assert lines[2] == "Top 3:" and len([x for x in lines if x.endswith("%")]) == 3
        assert any(x.startswith("Length: ") for x in lines)
    assert replies[7] == [too_big_text(25 * 1024 * 1024)]
    assert replies[8] == [not_audio_text("notes.pdf", "application/pdf")]
    # The broken file: a polite reason, no traceback, no server path; then the bot went on.
    broken_reason = plain_reason(expected["broken"]["error"], clips["broken"][0], "song.mp3")
    assert replies[9][0] == error_text(broken_reason, "song.mp3")
    assert "Traceback" not in replies[9][0] and str(uploads) not in replies[9][0]
    assert replies[9][1] == result_text(expected["short"]) and "padded" in replies[9][1]
    slowed = [t for t in replies[10] if t.startswith("Slow down")]
    answered = [t for t in replies[10] if t.startswith("Genre: ")]
    assert len(slowed) == 2 and len(answered) == 3

    # Refused files were never fetched: not the oversize one, not the PDF, not the slowed two.
    asked = [p["file_id"] for p in api.called("getFile")]
    assert "BIGFILE" not in asked and "BIGFILE" not in api.downloads
    assert len(api.downloads) == len(asked) == 8
    assert sorted(os.listdir(uploads)) == []  # every upload deleted after classification
    assert {m for m, _ in api.calls} <= {
        "getMe",
        "deleteWebhook",
        "getUpdates",
        "getFile",
        "sendMessage",
        "sendChatAction",
    }

    # The token: in no reply, no log record, nothing on stdout or stderr. The mask shows the
    # guard really had records with the token to clean (the library logs its URLs at DEBUG).
    out, err = capfd.readouterr()
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for text in (*(m["text"] for m in api.sent), logged, out, err):
        assert TOKEN not in text and SECRET not in text
    assert MASK in logged


def test_a_slow_file_does_not_hold_up_other_chats(trained_run, clips, monkeypatch):
    """Classification runs off the event loop: while one file is stuck in the model, another
    chat still gets its answer."""
    from mgc.core.device import CPU_FP32
    from mgc.models.bundle import load_bundle
    from mgc.serve.bot import app as bot_app

    run_dir, _ = trained_run
    release = threading.Event()
    released_by_test: list[bool] = []
    real_predict_one = bot_app.predict_one

    def stuck_predict_one(*args: Any) -> dict[str, Any]:
        # Were this run on the event loop, the loop would stand still, /help would go
        # unanswered and nothing would set the event: the wait would time out instead.
        released_by_test.append(release.wait(20))
        return real_predict_one(*args)

    monkeypatch.setattr(bot_app, "predict_one", stuck_predict_one)
    service = bot_app.GenreService(load_bundle(run_dir), run_dir, workers=1, fast=CPU_FP32)

    async def conversation() -> None:
        try:
            api.push(1, document=upload(api, clips["flac"]))
            # The typing notice goes out just before the file is handed to the model.
            await wait_until(
                lambda: api.called("sendChatAction"), 60, "the file to reach the model"
            )
            api.push(2, **command("/help"))
            await wait_until(lambda: api.replies(2), 30, "/help while a file is classified")
            assert api.replies(1) == []  # still in the model
        finally:
            release.set()
        await wait_until(lambda: api.replies(1), 60, "the stuck file's answer")

    with FakeBotApi(TOKEN) as api:
        app = bot_app.build_application(TOKEN, bot_app.GenreBot(service), api.url)
        try:
            run_app(app, conversation)
        finally:
            release.set()
            service.close()
    assert released_by_test == [True]
    assert api.replies(2) == [HELP_TEXT]
    assert api.replies(1)[0].startswith("Genre: ")


# ---------------------------------------------------------------------------------------------
# The command line


def run_bot(*args: str, env: dict[str, str] | None = None, **kwargs: Any):
    base = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    return subprocess.Popen(
        [sys.executable, "-m", "mgc.bot", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_cli_without_token_is_one_line_exit_2(tmp_path):
    for args in ([], ["--token-file", str(tmp_path / "missing")]):
        proc = run_bot(*args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
        assert out == ""
    assert "TELEGRAM_BOT_TOKEN" in err or "token file" in err


def test_cli_rejected_or_unreachable_never_shows_token(tmp_path):
    with FakeBotApi(TOKEN, accept=False) as api:
        proc = run_bot("--api-server", api.url, env={"TELEGRAM_BOT_TOKEN": TOKEN})
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "rejected the token" in err and "Traceback" not in err
    assert TOKEN not in err + out and SECRET not in err + out
    # Nothing listens on a port just closed: the Bot API cannot be reached.
    with FakeBotApi(TOKEN) as api:
        url = api.url
    proc = run_bot("--api-server", url, env={"TELEGRAM_BOT_TOKEN": TOKEN})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "cannot reach the Bot API" in err and "Traceback" not in err
    assert TOKEN not in err + out and SECRET not in err + out


def test_cli_serves_and_stops_on_sigint(trained_run, clips, tmp_path):
    """The real entry point: token from a file, a file classified, Ctrl-C stops it cleanly."""
    run_dir, _ = trained_run
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with FakeBotApi(TOKEN) as api:
        proc = run_bot(
            "--model",
            str(run_dir),
            "--token-file",
            str(token_file),
            "--api-server",
            api.url,
            "--device",
            "cpu",
            "--verbose",
        )
        try:
            api.push(1, **command("/start"))
            path, mime = clips["flac"]
            info = api.add_file(path.read_bytes(), "documents", ".flac")
            api.push(2, document={"file_name": path.name, "mime_type": mime, **info})
            deadline = time.monotonic() + 180
            while not (api.replies(1) and api.replies(2)) and proc.poll() is None:
                assert time.monotonic() < deadline, "no replies from the bot"
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert api.replies(1) == [HELP_TEXT]
    assert api.replies(2)[0].startswith("Genre: ")
    assert api.called("setMyCommands")
    assert "@genre_test_bot ready" in err
    # --verbose logs the library's URLs: masked, like everything else.
    assert MASK in err
    assert TOKEN not in err + out and SECRET not in err + out
    assert "Traceback" not in err
