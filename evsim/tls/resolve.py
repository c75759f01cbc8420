"""Look up what a TLS-model table names: certificates, CRLs and identities are referred to by name.

The model's ``from_toml`` constructors take a resolver (name -> objects: a file under a directory, a
certificate type of a node's store, a root of a simulated PKI) and turn each failure into a
:class:`~evsim.errors.ConfigError` that names the entry, so a table never holds key material itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography import x509

from evsim.errors import ConfigError, PkiError


def resolve_named(
    resolver: Callable[[str], Sequence[object]], name: str, *, path: str, what: str
) -> list[Any]:
    """What ``resolver`` finds for ``name``.

    Raises:
        ConfigError: at ``path``: the resolver does not know the name (``KeyError``, a missing file, a
            corrupt certificate), or it holds nothing.
    """
    try:
        found = list(resolver(name))
    except (KeyError, FileNotFoundError, PkiError, ConfigError) as exc:
        raise ConfigError(f"cannot find {what} {name!r} ({exc})", path=path, value=name) from exc
    if not found:
        raise ConfigError(f"{what} {name!r} holds nothing", path=path, value=name)
    return found


def cert_tuple(value: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """attrs converter of certificate fields: one certificate or several, as a tuple."""
    if isinstance(value, x509.Certificate):
        return (value,)
    return tuple(value)
