"""The OpenSSL calls evsim needs that pyOpenSSL does not expose (isolated here, each with a fallback).

pyOpenSSL runs on cryptography's cffi binding (``OpenSSL._util.lib``), which declares more of OpenSSL
than pyOpenSSL wraps. We use exactly these functions:

* ``SSL_get0_param`` + ``X509_VERIFY_PARAM_set_time``: set the certificate-validity time on *one*
  connection. The public ``X509Store.set_time`` works on the context's shared store, and only the first
  call takes effect (``X509_STORE_set1_param`` does not overwrite a time already set; checked with
  pyOpenSSL 26.4 / OpenSSL 4.0.3). With a per-connection time, OpenSSL checks validity itself and reports
  X509 errors 9/10, so the peer also gets the proper alert (``certificate_expired``...).
  Fallback when missing: contexts disable OpenSSL's time check and our verify callback compares the
  validity period with the simulation time (same result locally; the peer then sees ``internal_error``).
* ``SSL_session_reused``: for ``TlsInfo.session_reused``. Fallback: "the verify callback did not run".
* ``SSL_CTX_set1_curves_list`` (the binding's name for ``SSL_CTX_set1_groups_list``): the ordered
  key-exchange groups (``TlsProfile.groups``). Fallback: pyOpenSSL's ``Context.set_tmp_ecdh``, which in
  OpenSSL 3+ restricts the context to that *one* EC curve, so only the first group is applied and it must
  be an EC curve (``groups`` is then *partial*, see ``knobs.py``).
* ``SSL_CTX_set1_sigalgs_list``: the signature algorithms offered / accepted
  (``TlsProfile.signature_algorithms``). No fallback: without it the knob is *declared*.
* ``SSL_CTX_set_msg_callback``: every protocol message a context's connections send and receive, as
  plaintext (``evsim.tls.trace``, for ``evsim explain handshake``). Fallback: no trace (the explanation
  then rests on the negotiated values alone).
* ``BIO_new(BIO_s_mem())`` + ``SSL_set_bio`` on a connection in memory-BIO mode (pyOpenSSL's
  ``Connection._into_ssl`` / ``_from_ssl``): :func:`renew_memory_bios` swaps two empty memory BIOs for new
  ones, because a memory BIO keeps the largest buffer it ever held (≈9 KiB per connection pair after a
  TLS 1.3 handshake: the flights and the session tickets). ``SSL_set_bio`` frees the old pair. Fallback:
  the BIOs stay.

The module reads private attributes (``OpenSSL._util.lib``, ``Connection._ssl``); the dependency pins
(pyOpenSSL < 27, cryptography < 51) keep them stable, and the fallbacks keep evsim working if they go.
"""

from __future__ import annotations

import datetime as _dt
import importlib
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from evsim.tls.verify import whole_seconds

try:
    _LIB: Any = importlib.import_module("OpenSSL._util").lib
    _FFI: Any = importlib.import_module("OpenSSL._util").ffi
except (ImportError, AttributeError):  # pragma: no cover
    _LIB = _FFI = None

_get0_param = getattr(_LIB, "SSL_get0_param", None)
_set_time = getattr(_LIB, "X509_VERIFY_PARAM_set_time", None)
_session_reused = getattr(_LIB, "SSL_session_reused", None)

_set_groups = getattr(_LIB, "SSL_CTX_set1_curves_list", None)
_set_sigalgs = getattr(_LIB, "SSL_CTX_set1_sigalgs_list", None)
_set_msg_callback = getattr(_LIB, "SSL_CTX_set_msg_callback", None)

HAVE_GROUPS_LIST: bool = _set_groups is not None
"""True when :func:`set_groups` applies the whole ordered list (else only the first EC curve)."""
HAVE_SIGALGS_LIST: bool = _set_sigalgs is not None
"""True when :func:`set_sigalgs` works."""

HAVE_CONNECTION_TIME: bool = _get0_param is not None and _set_time is not None
"""True when :func:`set_verify_time` works; else the verify callback checks validity (see module doc)."""


def _ssl_ptr(conn: SSL.Connection) -> Any:
    return getattr(conn, "_ssl", None)


def set_verify_time(conn: SSL.Connection, when: _dt.datetime) -> None:
    """Make OpenSSL check certificate validity on ``conn`` at ``when``, truncated to whole seconds
    (``verify.whole_seconds``: the same rule as the fallback check, ``verify.check_validity``).

    Only call when :data:`HAVE_CONNECTION_TIME` is True.
    """
    assert _get0_param is not None and _set_time is not None
    param = _get0_param(_ssl_ptr(conn))
    _set_time(param, whole_seconds(when))


def session_reused(conn: SSL.Connection) -> bool | None:
    """``SSL_session_reused(conn)``, or None when the binding lacks it."""
    ptr = _ssl_ptr(conn)
    if _session_reused is None or ptr is None:  # pragma: no cover
        return None
    return bool(_session_reused(ptr))


_new_bio = getattr(_LIB, "BIO_new", None)
_mem_method = getattr(_LIB, "BIO_s_mem", None)
_set_bio = getattr(_LIB, "SSL_set_bio", None)
_mem_data = getattr(_LIB, "BIO_get_mem_data", None)
_pending = getattr(_LIB, "SSL_pending", None)


def renew_memory_bios(conn: SSL.Connection) -> tuple[Any, Any] | None:
    """Give ``conn`` (memory-BIO mode) two new, empty memory BIOs when nothing waits in the old ones, nor
    plaintext in the engine; ``SSL_set_bio`` frees the old pair (see the module doc).

    Returns:
        The new ``(incoming, outgoing)`` BIO pointers (for a caller that holds them, as the stream's
        record-layer fast path does), or None when nothing was swapped (bytes waiting, the transport's EOF
        already fed, or a binding without the calls).
    """
    ssl = _ssl_ptr(conn)
    into, out = getattr(conn, "_into_ssl", None), getattr(conn, "_from_ssl", None)  # pyOpenSSL's pair
    if (
        _new_bio is None
        or _mem_method is None
        or _set_bio is None
        or _mem_data is None
        or _pending is None
        or _FFI is None
        or ssl is None
        or into is None
        or out is None
    ):  # pragma: no cover - binding or pyOpenSSL without them
        return None
    if _mem_data(into, _FFI.NULL) or _mem_data(out, _FFI.NULL) or _pending(ssl):
        return None
    new_in = _new_bio(_mem_method())
    new_out = _new_bio(_mem_method())
    if new_in == _FFI.NULL or new_out == _FFI.NULL:  # pragma: no cover - out of memory
        for bio in (new_in, new_out):
            if bio != _FFI.NULL:
                _LIB.BIO_free(bio)
        return None
    _set_bio(ssl, new_in, new_out)
    setattr(conn, "_into_ssl", new_in)  # noqa: B010 - pyOpenSSL's bio_read/bio_write use the new pair
    setattr(conn, "_from_ssl", new_out)  # noqa: B010
    return new_in, new_out


def _ctx_ptr(ctx: SSL.Context) -> Any:
    return getattr(ctx, "_context", None)


def set_groups(ctx: SSL.Context, names: list[str]) -> bool:
    """Restrict ``ctx`` to the key-exchange groups ``names`` (preference order).

    Args:
        ctx: a context no connection has used yet.
        names: OpenSSL group names (``X25519``, ``secp256r1``...).

    Returns:
        True when the engine accepted the list; False when it refused it (an unknown name) or the
        binding lacks the call (then use ``Context.set_tmp_ecdh``).
    """
    ptr = _ctx_ptr(ctx)
    if _set_groups is None or ptr is None:  # pragma: no cover - binding without the call
        return False
    return bool(_set_groups(ptr, ":".join(names).encode("ascii")) == 1)


def set_sigalgs(ctx: SSL.Context, names: list[str]) -> bool:
    """Restrict ``ctx`` to the signature algorithms ``names`` (TLS SignatureScheme names, RFC 8446 §4.2.3).

    Args:
        ctx: a context no connection has used yet.
        names: scheme names (``ecdsa_secp256r1_sha256``, ``rsa_pss_rsae_sha256``...).

    Returns:
        True when the engine accepted the list; False when it refused it or the binding lacks the call.
    """
    ptr = _ctx_ptr(ctx)
    if _set_sigalgs is None or ptr is None:  # pragma: no cover - binding without the call
        return False
    return bool(_set_sigalgs(ptr, ":".join(names).encode("ascii")) == 1)


HAVE_MESSAGE_CALLBACK: bool = _set_msg_callback is not None and _FFI is not None
"""True when :func:`set_message_callback` works."""

MessageCallback = Callable[[bool, int, int, bytes], None]
"""``(sent, version, content_type, data)``: one protocol message of a connection (see ``SSL_CTX_set_msg_callback``)."""
_MESSAGE_CALLBACKS: dict[int, Any] = {}
"""The cffi callbacks installed, by context address (a callback must live as long as OpenSSL holds it)."""


def set_message_callback(ctx: SSL.Context, callback: MessageCallback | None) -> bool:
    """Report every protocol message of ``ctx``'s connections to ``callback`` (None: stop reporting).

    ``callback`` runs inside OpenSSL and must not raise (cffi would print and drop the exception).

    Returns:
        False when the binding lacks the call (nothing is reported).
    """
    ptr = _ctx_ptr(ctx)
    if (
        _set_msg_callback is None or _FFI is None or ptr is None
    ):  # pragma: no cover - binding without the call
        return False
    key = int(_FFI.cast("uintptr_t", ptr))
    if callback is None:
        _set_msg_callback(ptr, _FFI.NULL)
        _MESSAGE_CALLBACKS.pop(key, None)
        return True
    user = callback

    def on_message(
        write_p: int, version: int, content_type: int, buf: Any, size: int, ssl: Any, arg: Any
    ) -> None:
        user(bool(write_p), version, content_type, bytes(_FFI.buffer(buf, size)))

    raw = _FFI.callback("void(int, int, int, const void *, size_t, SSL *, void *)", on_message)
    _MESSAGE_CALLBACKS[key] = raw
    _set_msg_callback(ptr, raw)
    return True


def engine_version() -> str:
    """The OpenSSL version the engine runs on (``OpenSSL 3.5.0 8 Apr 2025``...)."""
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")
