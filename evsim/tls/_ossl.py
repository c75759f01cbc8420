"""The two OpenSSL calls evsim needs that pyOpenSSL does not expose (isolated here, each with a fallback).

pyOpenSSL runs on cryptography's cffi binding (``OpenSSL._util.lib``), which declares more of OpenSSL
than pyOpenSSL wraps. We use exactly two of those functions:

* ``SSL_get0_param`` + ``X509_VERIFY_PARAM_set_time``: set the certificate-validity time on *one*
  connection. The public ``X509Store.set_time`` works on the context's shared store, and only the first
  call takes effect (``X509_STORE_set1_param`` does not overwrite a time already set; checked with
  pyOpenSSL 26.4 / OpenSSL 4.0.3). With a per-connection time, OpenSSL checks validity itself and reports
  X509 errors 9/10, so the peer also gets the proper alert (``certificate_expired``...).
  Fallback when missing: contexts disable OpenSSL's time check and our verify callback compares the
  validity period with the simulation time (same result locally; the peer then sees ``internal_error``).
* ``SSL_session_reused``: for ``TlsInfo.session_reused``. Fallback: "the verify callback did not run".

The module reads private attributes (``OpenSSL._util.lib``, ``Connection._ssl``); the dependency pins
(pyOpenSSL < 27, cryptography < 51) keep them stable, and the fallbacks keep evsim working if they go.
"""

from __future__ import annotations

import datetime as _dt
import importlib
from typing import Any

from OpenSSL import SSL

try:
    _LIB: Any = importlib.import_module("OpenSSL._util").lib
except (ImportError, AttributeError):  # pragma: no cover
    _LIB = None

_get0_param = getattr(_LIB, "SSL_get0_param", None)
_set_time = getattr(_LIB, "X509_VERIFY_PARAM_set_time", None)
_session_reused = getattr(_LIB, "SSL_session_reused", None)

HAVE_CONNECTION_TIME: bool = _get0_param is not None and _set_time is not None
"""True when :func:`set_verify_time` works; else the verify callback checks validity (see module doc)."""


def _ssl_ptr(conn: SSL.Connection) -> Any:
    return getattr(conn, "_ssl", None)


def set_verify_time(conn: SSL.Connection, when: _dt.datetime) -> None:
    """Make OpenSSL check certificate validity on ``conn`` at ``when`` (whole seconds, like OpenSSL).

    Only call when :data:`HAVE_CONNECTION_TIME` is True.
    """
    assert _get0_param is not None and _set_time is not None
    param = _get0_param(_ssl_ptr(conn))
    _set_time(param, int(when.timestamp()))


def session_reused(conn: SSL.Connection) -> bool | None:
    """``SSL_session_reused(conn)``, or None when the binding lacks it."""
    ptr = _ssl_ptr(conn)
    if _session_reused is None or ptr is None:  # pragma: no cover
        return None
    return bool(_session_reused(ptr))
