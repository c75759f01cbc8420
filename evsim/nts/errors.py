"""The exceptions of the NTS cores: every refusal carries a short machine-readable ``reason``."""

from __future__ import annotations

from evsim.errors import EvsimError

__all__ = ["KeProtocolError", "NtpRejected", "NtsError"]


class NtsError(EvsimError):
    """Base class of the NTS errors.

    Attributes:
        reason: a short token from the event vocabulary (``record_too_large``, ``uid_mismatch``, ...).
        detail: human-readable context (may quote peer data: escape it before logging).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KeProtocolError(NtsError):
    """An NTS-KE message broke RFC 8915 §4.

    Attributes:
        error_code: the Error record code a server answers with (0 unrecognized critical record,
            1 bad request, 2 internal server error); None when the error was found by a client or there is
            nothing to answer (the peer is gone).
    """

    def __init__(self, reason: str, detail: str = "", *, error_code: int | None = 1) -> None:
        super().__init__(reason, detail)
        self.error_code = error_code


class NtpRejected(NtsError):
    """An NTP packet was dropped (malformed, unauthenticated, not an answer to the outstanding request...)."""
