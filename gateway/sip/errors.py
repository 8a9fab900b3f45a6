"""SIP errors that carry their wire status.

Every error raised by the SIP core is a :class:`SipError`; it becomes a response (or a dropped
datagram with a counter, when no response can be formed) at exactly one boundary.
"""

from __future__ import annotations


class SipError(Exception):
    """An error with the SIP status and reason phrase it maps to."""

    status: int = 500
    reason: str = "Server Internal Error"
    message: object | None = None
    """What :func:`~gateway.sip.message.parse_message` could parse of the offending message (a
    ``Request`` to answer, or a ``Response`` kept for logging); ``None`` otherwise."""

    def __init__(self, detail: str = "", *, status: int | None = None, reason: str | None = None):
        super().__init__(detail or self.reason)
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.detail = detail or self.reason


class BadRequest(SipError):
    """RFC 3261 §21.4.1: malformed syntax."""

    status = 400
    reason = "Bad Request"


class Unparseable(BadRequest):
    """So broken that no response can be formed (no Via, no start line): the datagram is dropped."""


class UnsupportedUriScheme(SipError):
    """RFC 3261 §21.4.14."""

    status = 416
    reason = "Unsupported URI Scheme"


class VersionNotSupported(SipError):
    """RFC 3261 §21.5.6."""

    status = 505
    reason = "Version Not Supported"


class MessageTooLarge(SipError):
    """RFC 3261 §21.4.12 (413); we also use it for oversized headers."""

    status = 413
    reason = "Request Entity Too Large"


class BadExtension(SipError):
    """RFC 3261 §21.4.15: a Require'd extension we do not support."""

    status = 420
    reason = "Bad Extension"


class TooManyHops(SipError):
    """RFC 3261 §21.4.20."""

    status = 483
    reason = "Too Many Hops"


class CallDoesNotExist(SipError):
    """RFC 3261 §21.4.19."""

    status = 481
    reason = "Call/Transaction Does Not Exist"


class LoopDetected(SipError):
    """RFC 3261 §21.4.20."""

    status = 482
    reason = "Loop Detected"
