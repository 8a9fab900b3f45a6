"""A minimal SMTP server on 127.0.0.1 for tests: accepts every message and keeps it.

Speaks enough of RFC 5321 for ``smtplib``: greeting, EHLO/HELO, MAIL, RCPT, DATA (dot-stuffed,
ended by ``.``), RSET, NOOP, QUIT. Messages are parsed with :mod:`email` for the assertions.
"""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from email.message import EmailMessage
from typing import Any


class SmtpSink:
    """``with SmtpSink() as sink: ... sink.address ... sink.messages``."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.received = threading.Event()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                while True:
                    raw = self.rfile.readline(65536)
                    if not raw:
                        return
                    verb = raw.decode("latin-1").strip().split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 sink")
                    elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        lines = []
                        while True:
                            line = self.rfile.readline(1 << 20)
                            if not line or line in (b".\r\n", b".\n"):
                                break
                            lines.append(line[1:] if line.startswith(b"..") else line)
                        msg = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                        sink.messages.append(msg)  # type: ignore[arg-type]
                        sink.received.set()
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
