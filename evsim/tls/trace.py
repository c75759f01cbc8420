"""A record of the protocol messages a compiled context's connections exchange (for ``evsim explain handshake``).

OpenSSL reports every handshake message, alert and ChangeCipherSpec a connection sends or receives to the
context's message callback, *as plaintext*, including the TLS 1.3 messages that travel encrypted
(EncryptedExtensions, Certificate, NewSessionTicket). :func:`trace_messages` installs that callback on the
shared context of a :class:`~evsim.tls.context.ClientTls` or :class:`~evsim.tls.context.ServerTls` for the
duration of a ``with`` block and appends each message to a bounded :class:`MessageTrace`. The context is
shared by every connection made from it: trace only where nothing else uses it at the same time (a tool
running one handshake, a test). Parsing the messages is not done here (see ``evsim.explain.tls_messages``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
import trio

from evsim.tls import _ossl
from evsim.tls.context import ClientTls, ServerTls

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
"""TLS content types (RFC 8446 §5.1) of the messages kept; record headers (OpenSSL's pseudo types 256/257)
are skipped."""
_KEPT = frozenset({CONTENT_CHANGE_CIPHER_SPEC, CONTENT_ALERT, CONTENT_HANDSHAKE})

MAX_MESSAGES = 256
"""Messages kept per trace: a handshake is about a dozen; the rest is counted in ``dropped``."""
MAX_MESSAGE_BYTES = 65536
"""Bytes kept per message (a certificate chain is a few KiB; a handshake message can claim up to 16 MiB)."""


@attrs.frozen
class TlsMessage:
    """One protocol message as OpenSSL saw it.

    Attributes:
        side: ``"client"`` or ``"server"``: the side whose engine reported it.
        sent: True when that side sent it, False when it received it.
        content_type: 20 (ChangeCipherSpec), 21 (alert) or 22 (handshake).
        version: the record's protocol version as OpenSSL reports it (``0x0304`` for TLS 1.3).
        data: the message (a handshake message with its 4-byte header; an alert's 2 bytes), at most
            :data:`MAX_MESSAGE_BYTES`.
        at: trio time when it was reported.
        truncated: ``data`` was cut to :data:`MAX_MESSAGE_BYTES`.
    """

    side: str
    sent: bool
    content_type: int
    version: int
    data: bytes
    at: float
    truncated: bool = False


@attrs.define
class MessageTrace:
    """The messages of one or more traced contexts, in the order the engines reported them (bounded)."""

    messages: list[TlsMessage] = attrs.field(factory=list)
    dropped: int = 0

    def add(self, message: TlsMessage) -> None:
        """Keep ``message`` (or count it as dropped when the trace is full)."""
        if len(self.messages) >= MAX_MESSAGES:
            self.dropped += 1
        else:
            self.messages.append(message)


@contextlib.contextmanager
def trace_messages(tls: ClientTls | ServerTls, trace: MessageTrace) -> Iterator[bool]:
    """Append the messages of ``tls``'s connections to ``trace`` inside the block.

    Args:
        tls: a compiled configuration (its shared context is traced).
        trace: where messages go.

    Yields:
        False when the engine cannot report messages (the trace stays empty).
    """
    side = tls.side

    def on_message(sent: bool, version: int, content_type: int, data: bytes) -> None:
        if content_type not in _KEPT:
            return
        try:
            at = trio.current_time()
        except RuntimeError:  # pragma: no cover - a handshake outside trio
            at = 0.0
        cut = len(data) > MAX_MESSAGE_BYTES
        trace.add(TlsMessage(side, sent, content_type, version, data[:MAX_MESSAGE_BYTES], at, cut))

    installed = _ossl.set_message_callback(tls.context, on_message)
    try:
        yield installed
    finally:
        if installed:
            _ossl.set_message_callback(tls.context, None)


__all__ = ["MAX_MESSAGES", "MAX_MESSAGE_BYTES", "MessageTrace", "TlsMessage", "trace_messages"]
