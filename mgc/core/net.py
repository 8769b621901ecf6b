"""Network reachability probe: a short TCP connect, so offline runs fail in seconds, not minutes."""

from __future__ import annotations

import socket
import urllib.parse

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Unreachable(OSError):
    """The host of a URL did not accept a connection; str() is one line naming host and port."""


def check_reachable(url: str, timeout_s: float) -> None:
    """Open and close a TCP connection to the host of `url`, or raise `Unreachable`.

    urllib has no default timeout, so behind a firewall that drops packets a download would
    hang; this probe bounds that wait. It says nothing about the path or the server's answer.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url}: no host to connect to")
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        # strerror is None for timeouts and for errors raised with a bare message.
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise Unreachable(f"cannot reach {parts.hostname}:{port} ({reason})") from exc
