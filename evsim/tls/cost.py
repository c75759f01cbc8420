"""The CPU model's name for a TLS handshake (:mod:`evsim.cpu`): ``tls/<side>/<mode>/<version>/<group>/<key>``.

Pure functions of a handshake's outcome, so the nodes that charge a handshake and ``evsim calibrate`` that
measures one name it alike.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from evsim.cpu import Kind
from evsim.tls.stream import TlsInfo

__all__ = ["handshake_kind", "key_kind"]


def key_kind(cert: x509.Certificate | None) -> str:
    """``ec``, ``rsa``, ``ed25519``, ``ed448`` or ``other`` for the certificate's public key."""
    if cert is None:
        return "other"
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448"
    return "other"


def handshake_kind(
    info: TlsInfo, *, server_cert: x509.Certificate | None = None, client_cert: bool = False
) -> Kind:
    """The kind of a completed handshake, seen from ``info.side``.

    Args:
        info: the handshake's outcome.
        server_cert: the server's own leaf (server side; a client reads it from the peer chain).
        client_cert: the client had a certificate to send (client side: mutual TLS).
    """
    if info.session_reused:
        mode = "resumed"
    elif (info.side == "server" and info.peer_chain) or (info.side == "client" and client_cert):
        mode = "mutual"
    else:
        mode = "full"
    leaf = info.peer_chain[0] if info.side == "client" and info.peer_chain else server_cert
    version = info.version.removeprefix("TLSv")
    return ("tls", info.side, mode, version, (info.group or "unknown").lower(), key_kind(leaf))
