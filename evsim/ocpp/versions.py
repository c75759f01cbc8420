"""OCPP versions evsim speaks and their WebSocket subprotocol names.

The subprotocol names come from OCPP-J 2.1 §3.1.2 (protocol-digest §1.1): the client lists the versions it
supports in ``Sec-WebSocket-Protocol`` in its preference order, the server answers with exactly one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from evsim.errors import ConfigError, OcppError

#: OCPP versions evsim implements, oldest first.
OCPP_VERSIONS: Final[tuple[str, ...]] = ("2.0.1", "2.1")

#: OCPP version -> WebSocket subprotocol (OCPP-J 2.1 §3.1.2).
SUBPROTOCOL_OF_VERSION: Final[dict[str, str]] = {"2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}

#: WebSocket subprotocol -> OCPP version.
VERSION_OF_SUBPROTOCOL: Final[dict[str, str]] = {sp: v for v, sp in SUBPROTOCOL_OF_VERSION.items()}


def check_version(version: str) -> str:
    """Return ``version`` if evsim implements it.

    Args:
        version: an OCPP version such as ``"2.0.1"``.

    Returns:
        The same string.

    Raises:
        ConfigError: the version is not one of :data:`OCPP_VERSIONS`.
    """
    if version not in SUBPROTOCOL_OF_VERSION:
        raise ConfigError(
            "unsupported OCPP version",
            path="ocpp_version",
            value=version,
            fix=f"use one of {', '.join(OCPP_VERSIONS)}",
        )
    return version


def subprotocol_for(version: str) -> str:
    """The WebSocket subprotocol name of an OCPP version.

    Args:
        version: ``"2.0.1"`` or ``"2.1"``.

    Returns:
        ``"ocpp2.0.1"`` or ``"ocpp2.1"``.

    Raises:
        ConfigError: unknown version.
    """
    return SUBPROTOCOL_OF_VERSION[check_version(version)]


def version_for(subprotocol: str) -> str:
    """The OCPP version of a negotiated WebSocket subprotocol.

    For a lookup that may fail quietly use ``VERSION_OF_SUBPROTOCOL.get(subprotocol)``.

    Args:
        subprotocol: the negotiated subprotocol, such as ``"ocpp2.1"``.

    Returns:
        ``"2.0.1"`` or ``"2.1"``.

    Raises:
        OcppError: evsim does not speak that subprotocol (``ProtocolError``; e.g. ``"ocpp1.6"``).
    """
    version = VERSION_OF_SUBPROTOCOL.get(subprotocol)
    if version is None:
        raise OcppError(f"unsupported OCPP subprotocol {subprotocol!r}", error_code="ProtocolError")
    return version


def choose_subprotocol(offered: Iterable[str], supported: Iterable[str]) -> str | None:
    """Server side subprotocol choice: the first of *our* preferences that the client offered.

    OCPP-J 2.1 §3.3: with no acceptable subprotocol the server completes the handshake without a
    ``Sec-WebSocket-Protocol`` header and closes (the WebSocket layer does that when this returns None).

    Args:
        offered: the client's ``Sec-WebSocket-Protocol`` tokens (surrounding blanks are ignored).
        supported: the server's choices, most preferred first; each either a subprotocol name
            (``"ocpp2.1"``) or an OCPP version (``"2.1"``), which is mapped to its subprotocol.

    Returns:
        The chosen subprotocol name, or None when nothing matches.
    """
    offered_set = {token.strip() for token in offered}
    for choice in supported:
        name = SUBPROTOCOL_OF_VERSION.get(choice, choice)
        if name in offered_set:
            return name
    return None
