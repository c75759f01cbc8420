"""A pure predictor of TLS handshakes: given both sides' models, what must happen.

The oracle of the property test (``tls-model.md`` "Proof"): :func:`predict` reads only the model values
(:class:`~evsim.tls.config.TlsProfile`, :class:`~evsim.tls.trust.TrustStore`,
:class:`~evsim.tls.config.Identity`, the suite table of :mod:`evsim.tls.suites`) and the simulation time, and
says either :class:`Negotiated` (version and suite) or :class:`Refused` (who refused, why, and what the
other side reports). It imports no OpenSSL binding and shares no code with the engine's checks (the chain,
validity hostname, pin and pairing rules are restated here from the specifications and ``tls-model.md``), so a
real handshake that disagrees
points at a bug in one of the two - or at a rule missing below.

Theory of operation
-------------------
Every rule was checked against real handshakes (pyOpenSSL 26.4 on OpenSSL 4.0.3, ``evsim.tls.stream``).
The handshake is a pipeline of stages; the first stage that refuses decides the outcome.

1. **Version.** A client whose newest version is TLS 1.3 lists its versions (``supported_versions``): the
   server picks the highest version both enable. A client whose newest version is TLS 1.2 or older sends
   only that maximum, and the server picks ``min(client max, server max)``. Either way, when the server
   finds no version it can use it refuses (``downgrade_refused``, OpenSSL "unsupported protocol") and the
   client hears a ``protocol_version`` alert, also reported as ``downgrade_refused``. In the second case
   the server's pick can be older than the client's *minimum* (a TLS 1.2-only client against a TLS
   1.0/1.1 server): the server then goes on to choose a suite for that version (rule 2, which may refuse
   first), and the *client* refuses the ServerHello (``downgrade_refused``, "unsupported protocol"); the
   server's record layer rejects the client's alert record ("wrong version number"), which the stream
   reads as the client's version refusal: the server reports ``downgrade_refused`` too (``remote``).
   When no suite fits the server's pick, the server refuses first with ``cipher_refused`` although the
   version is the cause (neither side can tell: see ``evsim.tls.failures``).
   Suites never influence the version: a client offering TLS 1.3 and 1.2 to a server enabling both, with
   no TLS 1.3 suite in common, is refused (rule 2) although a TLS 1.2 suite is shared - OpenSSL does not
   fall back.
2. **Suite.** Only the suite list of the negotiated version counts (``cipher_suites["1.3"]`` for TLS 1.3,
   ``cipher_suites["1.2"]`` for TLS 1.2 and older), and of it only the suites usable in that version
   (``Suite.min_version``: the AEAD and SHA-256/384 suites need TLS 1.2, so a TLS 1.1 handshake can only
   use the CBC-SHA suites). In TLS <= 1.2 the suite's authentication must match the server key: ``ECDSA``
   suites need an EC certificate, ``RSA`` suites (``ECDHE_RSA``, ``DHE_RSA`` and RSA key transport) an RSA
   one; TLS 1.3 suites work with either key. Among the shared suites, ``suite_preference = "server"``
   (``OP_CIPHER_SERVER_PREFERENCE``) takes the server's first, ``"client"`` the client's first. None
   shared: the *server* refuses (``cipher_refused``, "no shared cipher") and the client hears
   ``handshake_failure`` before any certificate, which it reports as ``cipher_refused``.
   The CCM_8 suites need OpenSSL security level 0 on both ends; a profile listing any CCM_8 suite is
   compiled at level 0, so a CCM_8 suite both ends list is always usable (the same holds for TLS 1.0/1.1:
   both ends enable them, so both run at level 0).
3. **The client verifies the server** (unless ``insecure_skip_verify``), in this order, the first failure
   winning:

   a. *Chain*: from the leaf, each issuer is looked up among the certificates the server sent and the
      anchors (same name and a verifying signature) until a self-signed certificate is reached; the
      chain is trusted only if that root is one of the anchors. An anchor that is not self-signed (an
      intermediate or the leaf itself) does not make a chain trusted - partial chains are off.
      Otherwise ``cert_invalid:unknown_ca``, even when the certificate is also expired.
   b. *Validity* (``time_check = "enforce"``): each certificate of the trusted chain, root first, at the
      simulation time rounded down to whole seconds, both bounds inclusive: X.509 times name whole
      seconds and RFC 5280's period runs "from notBefore through notAfter, inclusive", so 0.5 s after
      ``not_after`` is still valid and 0.5 s before ``not_before`` is not (the engine's rule,
      ``verify.whole_seconds``, on both of its paths). ``cert_invalid:not_yet_valid`` /
      ``cert_invalid:expired``.
   c. *Hostname* (a server name was given and ``hostname != "off"``): see :func:`hostname_verdict`;
      ``cert_invalid:hostname_mismatch`` or ``cert_invalid:wildcard``.
   d. *Pins* (``ClientSide.pins``, the client's ``PeerPolicy``), after 3a-3c passed: a pin counts when
      it is not ``released`` and ``now <= not_after`` (an instant, not truncated); ``active``, ``backup``
      and ``pending`` pins all match. Its target picks the keys it may match: ``leaf`` the server's leaf;
      ``intermediate`` the CAs between leaf and root of the trusted chain (3a); ``root`` that chain's
      root; ``any`` every certificate sent or in the trusted chain. Without a trusted chain (a peer mode,
      or ``insecure_skip_verify``) the chain as *sent* decides: its last certificate is the root when it
      is self-signed (a lone self-signed leaf is its own root), the certificates after the leaf and
      before such a root are intermediates. No live pin matches: ``pin_mismatch`` under ``enforce``;
      ``report_only`` lets the handshake go on; both report the event (:func:`reports_pin_mismatch`). A pin refusal happens in the Python verify callback,
      so the server hears ``internal_error`` - also under ``insecure_skip_verify`` with an unanchored
      chain (the callback decides on OpenSSL's success call, after accepting OpenSSL's own error).

   Peer modes (``TrustStore.mode = "pinned_peers"``, SHIP style, with enforced pins): 3a does not
   refuse an unanchored chain; the chain is built from the leaf through the certificates sent and the
   anchors as far as issuers are found, 3b checks that path (for a self-signed server: its leaf), then
   3c and 3d as above.

   The server hears an alert during its handshake (TLS 1.2 and 1.3 alike): ``unknown_ca`` ->
   ``peer_alert:unknown_ca``, ``expired`` -> ``peer_alert:certificate_expired``, ``not_yet_valid`` ->
   ``peer_alert:bad_certificate``; the hostname and wildcard checks run in evsim's Python verify callback,
   which cannot set an X509 error code, so for them OpenSSL sends ``peer_alert:internal_error``.
   A client refusal always wins over a server refusal of the client certificate: the server's certificate
   arrives, and is checked, before the client sends its own.
4. **The server verifies the client** (``client_auth`` ``optional``, ``required`` or ``pairing``; with
   ``none`` the server requests no certificate and the client sends none, whatever its identity):

   * no client identity: ``required`` refuses with ``cert_invalid:no_client_cert``; ``optional`` accepts;
   * an identity: rules 3a-3b with the server's trust store (no hostname check), also under ``optional``
     (a certificate that is sent is verified); a store with ``insecure_skip_verify`` accepts any
     certificate, but ``required`` still wants one;
   * ``pairing`` (SHIP, :class:`ServerSide` ``pairing``: the server policy's ``PeerTrust``): a
     certificate is required (as ``required``); the chain check is that of a peer mode (no anchors, the
     path as far as it goes, validity checked), then the pairing decision on the leaf, restated from
     ``evsim.tls.pairing``: not self-signed -> ``cert_invalid:not_self_signed``; no SKI or an SKI that
     is not SHA-1 of the key -> ``cert_invalid:no_ski`` / ``cert_invalid:ski_mismatch``; a known SKI
     with another SPKI hash -> ``pairing_refused:key_mismatch``; ``denied`` ->
     ``pairing_refused:denied`` (window or not); ``trusted`` -> accepted; ``pending`` -> accepted inside
     a window or with ``auto_accept``, else ``pairing_refused:pending``; an unknown SKI whose CN is the
     device id of a trusted or pending entry (a re-keyed device) -> accepted only inside a window (not
     by ``auto_accept``), else ``pairing_refused:unknown``; any other unknown SKI -> accepted inside a
     window or with ``auto_accept``, else ``pairing_refused:pending`` (recorded as a request) or, with
     ``MAX_PENDING`` requests waiting, ``pairing_refused:unknown``. These refusals (and
     ``not_self_signed``...) come from the Python callback: the client hears ``internal_error``.

   What the client reports depends on the version. TLS 1.3: the client's handshake completes (it has sent
   its certificate and Finished) before the server checks the certificate, so ``tls_connect`` succeeds,
   its ``TlsInfo`` shows the agreed version and suite, and the alert arrives on the client's *first
   read*; a missing certificate is ``peer_alert:certificate_required``. TLS <= 1.2: the alert arrives
   during the client's handshake; a missing certificate is ``peer_alert:handshake_failure`` (the stream
   reports a ``handshake_failure`` that follows the server's certificate as a peer alert, not as
   ``cipher_refused``). The other certificate alerts are as in rule 3.

Extending
---------
Each stage is a function of the model values returning a reason or None, so a new knob is a new stage
or a new input of one: pins are stage 3d, pairing is rule 4's ``pairing`` branch; revocation would be a
step between 3a and 3b. Not predicted: ``tofu`` trust, change notification (``ChangePolicy``: it needs
a history of earlier connections), groups and signature algorithms.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from evsim.tls import events
from evsim.tls.config import KNOWN_VERSIONS, Identity, TlsProfile
from evsim.tls.events import Side
from evsim.tls.pairing import (
    MAX_PENDING,
    NO_SKI,
    NOT_SELF_SIGNED,
    REFUSED_DENIED,
    REFUSED_KEY_MISMATCH,
    REFUSED_PENDING,
    REFUSED_UNKNOWN,
    SKI_MISMATCH,
    PeerTrust,
)
from evsim.tls.pins import PinSet
from evsim.tls.suites import BY_IANA
from evsim.tls.trust import TrustStore

ClientAuthMode: TypeAlias = Literal["none", "optional", "required", "pairing"]
"""``ServerTls.client_auth`` (restated: ``evsim.tls.context`` imports OpenSSL)."""
Stage: TypeAlias = Literal["handshake", "first_read"]
"""When a side learns of a refusal: in its handshake, or (TLS 1.3 client) on its first read after it."""

PIN_MISMATCH = events.PIN_MISMATCH

_ALERT_FOR: dict[str, str] = {
    events.CERT_UNKNOWN_CA: "unknown_ca",
    events.CERT_EXPIRED: "certificate_expired",
    events.CERT_NOT_YET_VALID: "bad_certificate",
}
"""The alert a peer receives when OpenSSL refuses a certificate for this reason (rules 3a-3b); every
other refusal (hostname, wildcard, pins, pairing) comes from evsim's Python verify callback, which cannot
set an X509 error code: OpenSSL then sends ``internal_error``."""
_CALLBACK_ALERT = "internal_error"


# ---------------------------------------------------------------- inputs


@attrs.frozen
class ClientSide:
    """The client's half of a handshake.

    Attributes:
        profile: how it speaks TLS.
        trust: how it verifies the server.
        identity: its client certificate, or None.
        server_name: the name it connects to (SNI and hostname check); None skips the hostname check.
        pins: the pins of its peer policy on the server's chain (rule 3d), or None. A ``pinned_peers``
            trust store needs enforced pins (``peer.require_policy``).
    """

    profile: TlsProfile
    trust: TrustStore
    identity: Identity | None = None
    server_name: str | None = None
    pins: PinSet | None = None


@attrs.frozen
class ServerSide:
    """The server's half of a handshake.

    Attributes:
        profile: how it speaks TLS (``suite_preference`` applies here).
        identity: its certificate chain and key.
        trust: how it verifies client certificates (needed for ``optional`` and ``required``; for
            ``pairing`` None means the default pairing store: no anchors, time checked).
        client_auth: ``none``, ``optional``, ``required`` or ``pairing``.
        pairing: the pairing list of its peer policy (``client_auth = "pairing"``; None = an empty one).
    """

    profile: TlsProfile
    identity: Identity
    trust: TrustStore | None = None
    client_auth: ClientAuthMode = "none"
    pairing: PeerTrust | None = None


# ---------------------------------------------------------------- outcomes


@attrs.frozen
class Negotiated:
    """The handshake succeeds on both sides.

    Attributes:
        version: ``"1.3"``, ``"1.2"``, ``"1.1"`` or ``"1.0"`` (the model's spelling).
        suite: the IANA suite name.
    """

    version: str
    suite: str


@attrs.frozen
class Refused:
    """One side refuses the handshake.

    Attributes:
        side: who refused.
        reason: the ``HandshakeFailed.reason`` of the refusing side (raised in its handshake).
        peer_reason: the reason the other side reports (``remote=True``).
        peer_stage: when the other side learns it.
        agreed: version and suite agreed before the refusal (None for version and suite refusals).

    The other side always reports its failure as the peer's doing (``HandshakeFailed.remote``).
    """

    side: Side
    reason: str
    peer_reason: str
    peer_stage: Stage = "handshake"
    agreed: Negotiated | None = None


Outcome: TypeAlias = Negotiated | Refused


@attrs.frozen
class View:
    """What one side observes; compare it with what a real handshake gave that side.

    Attributes:
        reason: None when the side's handshake and first exchange succeed, else its ``HandshakeFailed``
            reason.
        remote: the failure came from the peer (an alert), as ``HandshakeFailed.remote``.
        stage: where the failure shows (``handshake`` or ``first_read``), None on success.
        negotiated: the version and suite the side's ``TlsInfo`` shows (None when its handshake failed).
    """

    reason: str | None
    remote: bool = False
    stage: Stage | None = None
    negotiated: Negotiated | None = None


def view(outcome: Outcome, side: Side) -> View:
    """What ``side`` observes under ``outcome``.

    Args:
        outcome: a prediction.
        side: ``"client"`` or ``"server"``.

    Returns:
        The side's view.
    """
    if isinstance(outcome, Negotiated):
        return View(None, negotiated=outcome)
    if side == outcome.side:
        return View(outcome.reason, remote=False, stage="handshake")
    shown = outcome.agreed if outcome.peer_stage == "first_read" else None
    return View(outcome.peer_reason, remote=True, stage=outcome.peer_stage, negotiated=shown)


# ---------------------------------------------------------------- the predictor


def predict(client: ClientSide, server: ServerSide, *, now: _dt.datetime) -> Outcome:
    """Predict a handshake between ``client`` and ``server`` at simulation time ``now``.

    Args:
        client: the client's configuration.
        server: the server's configuration.
        now: the simulation's wall time both sides check certificates at (naive = UTC).

    Returns:
        :class:`Negotiated` or :class:`Refused` (see the module doc for every rule).
    """
    version = server_version(client.profile, server.profile)
    if version is None:
        return Refused("server", events.DOWNGRADE_REFUSED, events.DOWNGRADE_REFUSED)
    suite = choose_suite(version, client.profile, server.profile, key_kind(server.identity.leaf))
    if suite is None:
        return Refused("server", events.CIPHER_REFUSED, events.CIPHER_REFUSED)
    if version not in client.profile.versions:
        return Refused("client", events.DOWNGRADE_REFUSED, events.DOWNGRADE_REFUSED)
    agreed = Negotiated(version, suite)

    reason = server_cert_verdict(client, server.identity.chain, now)
    if reason is not None:
        alert = _ALERT_FOR.get(reason, _CALLBACK_ALERT)
        return Refused("client", reason, f"{events.PEER_ALERT}:{alert}", "handshake", agreed)

    reason = client_cert_verdict(server, client.identity, now)
    if reason is not None:
        tls13 = version == "1.3"
        if reason == events.CERT_NO_CLIENT_CERT:
            alert = "certificate_required" if tls13 else "handshake_failure"
        else:
            alert = _ALERT_FOR.get(reason, _CALLBACK_ALERT)
        stage: Stage = "first_read" if tls13 else "handshake"
        return Refused("server", reason, f"{events.PEER_ALERT}:{alert}", stage, agreed)
    return agreed


def server_version(client: TlsProfile, server: TlsProfile) -> str | None:
    """Rule 1: the version the server picks (the client may still refuse it), or None when it refuses."""
    if client.max_version == "1.3":
        common = set(client.versions) & set(server.versions)
        return max(common, key=KNOWN_VERSIONS.index) if common else None
    pick = min(client.max_version, server.max_version, key=KNOWN_VERSIONS.index)
    return pick if pick in server.versions else None


def key_kind(cert: x509.Certificate) -> str:
    """``"ECDSA"`` or ``"RSA"``: the ``Suite.auth`` a TLS <= 1.2 suite needs for this certificate's key."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    return type(key).__name__


def choose_suite(version: str, client: TlsProfile, server: TlsProfile, server_key: str) -> str | None:
    """Rule 2: the suite negotiated in ``version``, or None when no suite is shared.

    Args:
        version: the negotiated version.
        client: the client's profile.
        server: the server's profile (its ``suite_preference`` decides).
        server_key: :func:`key_kind` of the server certificate.

    Returns:
        The IANA name, or None.
    """
    at = KNOWN_VERSIONS.index(version)

    def usable(name: str) -> bool:
        suite = BY_IANA[name]
        if KNOWN_VERSIONS.index(suite.min_version) > at:
            return False
        return suite.auth in ("any", server_key)

    offered = [n for n in client.suites(version) if usable(n)]
    accepted = [n for n in server.suites(version) if usable(n)]
    first, second = (accepted, offered) if server.suite_preference == "server" else (offered, accepted)
    return next((n for n in first if n in second), None)


def server_cert_verdict(
    client: ClientSide, chain: Sequence[x509.Certificate], now: _dt.datetime
) -> str | None:
    """Rule 3: the client's reason to refuse the server ``chain`` (leaf first), or None."""
    reason, verified = _before_pins(client, chain, now)
    if reason is None and client.pins is not None:
        return pin_verdict(client.pins, chain, verified, now)
    return reason


def _before_pins(
    client: ClientSide, chain: Sequence[x509.Certificate], now: _dt.datetime
) -> tuple[str | None, tuple[x509.Certificate, ...] | None]:
    """Rules 3a-3c: (the client's reason to refuse, the trusted chain or None)."""
    trust = client.trust
    if trust.insecure_skip_verify:
        return None, None
    reason, verified = chain_verdict(trust, chain, now)
    if reason is None and client.server_name is not None:
        reason = hostname_verdict(chain[0], client.server_name, trust.hostname, trust.wildcards)
    return reason, verified


def reports_pin_mismatch(client: ClientSide, server: ServerSide, *, now: _dt.datetime) -> bool:
    """Whether the client's peer policy reports ``pin_mismatch`` (an event, under ``enforce`` and
    ``report_only`` alike): version and suite were agreed, rules 3a-3c passed, and no live pin matched.

    Args:
        client: the client's configuration.
        server: the server's configuration.
        now: simulation time.

    Returns:
        True when the mismatch is reported.
    """
    if client.pins is None:
        return False
    version = server_version(client.profile, server.profile)
    if version is None or version not in client.profile.versions:
        return False
    if choose_suite(version, client.profile, server.profile, key_kind(server.identity.leaf)) is None:
        return False
    chain = server.identity.chain
    reason, verified = _before_pins(client, chain, now)
    return reason is None and not pins_match(client.pins, chain, verified, now)


def client_cert_verdict(server: ServerSide, identity: Identity | None, now: _dt.datetime) -> str | None:
    """Rule 4: the server's reason to refuse the client's certificate (or its absence), or None."""
    if server.client_auth == "pairing":
        if identity is None:
            return events.CERT_NO_CLIENT_CERT
        trust = server.trust or TrustStore("pairing", (), hostname="off", mode="pinned_peers")
        reason = chain_verdict(trust, identity.chain, now)[0]
        return reason or pairing_verdict(server.pairing or PeerTrust(), identity.leaf, now)
    if server.client_auth == "none" or server.trust is None:
        return None
    if identity is None:
        return events.CERT_NO_CLIENT_CERT if server.client_auth == "required" else None
    if server.trust.insecure_skip_verify:
        return None
    return chain_verdict(server.trust, identity.chain, now)[0]


# ---------------------------------------------------------------- certificates


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def build_path(
    chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The path from the leaf through issuers found among the anchors and the certificates sent, until a
    self-signed certificate or a missing issuer.

    Args:
        chain: the certificates the peer sent, leaf first.
        anchors: the trust store's anchors.

    Returns:
        Leaf first.
    """
    pool = [*anchors, *chain[1:]]  # anchors first, like OpenSSL's X509_V_FLAG_TRUSTED_FIRST
    path = [chain[0]]
    while not _issued_by(path[-1], path[-1]):
        issuer = next((c for c in pool if c not in path and _issued_by(path[-1], c)), None)
        if issuer is None:
            break
        path.append(issuer)
    return tuple(path)


def build_chain(
    chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...] | None:
    """Rule 3a: the chain from the leaf to an anchor that is a self-signed root, or None when untrusted.

    Args:
        chain: the certificates the peer sent, leaf first.
        anchors: the trust store's anchors.

    Returns:
        Leaf to root, or None.
    """
    path = build_path(chain, anchors)
    return path if _issued_by(path[-1], path[-1]) and path[-1] in anchors else None


def chain_verdict(
    trust: TrustStore, chain: Sequence[x509.Certificate], now: _dt.datetime
) -> tuple[str | None, tuple[x509.Certificate, ...] | None]:
    """Rules 3a and 3b: (reason or None, the verified chain or None; always None in a peer mode)."""
    if trust.peer_mode:  # unanchored chains pass 3a; their path is still checked for validity
        checked, verified = build_path(chain, trust.anchors), None
    else:
        verified = build_chain(chain, trust.anchors)
        if verified is None:
            return events.CERT_UNKNOWN_CA, None
        checked = verified
    if trust.time_check == "enforce":
        for cert in reversed(checked):
            reason = validity_verdict(cert, now)
            if reason is not None:
                return reason, verified
    return None, verified


def validity_verdict(cert: x509.Certificate, now: _dt.datetime) -> str | None:
    """Rule 3b for one certificate: checked at ``now`` rounded down to whole seconds, bounds inclusive."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    at = _dt.datetime.fromtimestamp(math.floor(now.timestamp()), _dt.UTC)
    if at < cert.not_valid_before_utc:
        return events.CERT_NOT_YET_VALID
    if at > cert.not_valid_after_utc:
        return events.CERT_EXPIRED
    return None


# ---------------------------------------------------------------- pins and pairing


def _spki_sha256(cert: x509.Certificate) -> str:
    """RFC 7469 §2.4: SHA-256 of the DER SubjectPublicKeyInfo, hex."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def pin_verdict(
    pins: PinSet,
    chain: Sequence[x509.Certificate],
    verified: Sequence[x509.Certificate] | None,
    now: _dt.datetime,
) -> str | None:
    """Rule 3d: ``pin_mismatch`` when no live pin matches its target under ``enforce``, else None.

    Args:
        pins: the client's pins.
        chain: the chain the server sent, leaf first.
        verified: the trusted chain (rule 3a), None without one (peer mode, ``insecure_skip_verify``).
        now: simulation time.

    Returns:
        The reason, or None.
    """
    if pins_match(pins, chain, verified, now) or pins.enforcement == "report_only":
        return None
    return PIN_MISMATCH


def pins_match(
    pins: PinSet,
    chain: Sequence[x509.Certificate],
    verified: Sequence[x509.Certificate] | None,
    now: _dt.datetime,
) -> bool:
    """Rule 3d: does a live pin match the certificate its target names? (Arguments as :func:`pin_verdict`.)"""
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    if verified:
        inter, root = list(verified[1:-1]), list(verified[-1:])
    elif _issued_by(chain[-1], chain[-1]):
        inter, root = list(chain[1:-1]), list(chain[-1:])
    else:
        inter, root = list(chain[1:]), []
    keys = {
        "leaf": {_spki_sha256(chain[0])},
        "intermediate": {_spki_sha256(c) for c in inter},
        "root": {_spki_sha256(c) for c in root},
        "any": {_spki_sha256(c) for c in (*chain, *(verified or ()))},
    }
    return any(
        pin.state != "released"
        and (pin.not_after is None or now <= pin.not_after)
        and pin.spki_sha256 in keys[pin.target]
        for pin in pins.pins
    )


def pairing_verdict(trust: PeerTrust, leaf: x509.Certificate, now: _dt.datetime) -> str | None:
    """Rule 4, ``pairing``: the pairing listener's reason to refuse the client's leaf, or None.

    Args:
        trust: the listener's pairing list.
        leaf: the client's certificate.
        now: simulation time.

    Returns:
        The reason, or None to accept.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    if not _issued_by(leaf, leaf):
        return NOT_SELF_SIGNED
    ski = x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest.hex()
    try:
        declared = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return NO_SKI
    if declared != ski:
        return SKI_MISMATCH
    window = trust.window_until is not None and now < trust.window_until
    may_pair = trust.auto_accept or window
    known = next((p for p in trust.peers if p.ski == ski), None)
    if known is not None:
        if known.spki_sha256 is not None and known.spki_sha256 != _spki_sha256(leaf):
            return REFUSED_KEY_MISMATCH
        if known.state == "denied":
            return REFUSED_DENIED
        if known.state == "trusted" or may_pair:
            return None
        return REFUSED_PENDING
    cns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    device = cns[0] if cns else None
    if device is not None and any(
        p.device_id == device and p.state in ("trusted", "pending") for p in trust.peers
    ):
        return None if window else REFUSED_UNKNOWN
    if may_pair:
        return None
    pending = sum(p.state == "pending" for p in trust.peers)
    return REFUSED_UNKNOWN if pending >= MAX_PENDING else REFUSED_PENDING


# ---------------------------------------------------------------- hostnames


def _label_match(pattern: str, name: str) -> str | None:
    """``"exact"``, ``"wildcard"`` or None for one certificate name against the (normalized) host name.

    RFC 6125 §6.4.3 as OCPP uses it: ``*`` only as the whole left-most label, standing for exactly one
    label, and never directly above a top-level domain (``*.test`` matches nothing).
    """
    want = pattern.strip().rstrip(".").lower().split(".")
    have = name.split(".")
    if want == have:
        return "exact"
    rest = want[1:]
    if want[0] != "*" or len(rest) < 2 or any("*" in label for label in rest):
        return None
    return "wildcard" if len(have) == len(want) and have[0] and have[1:] == rest else None


def _best_match(patterns: Sequence[str], name: str) -> str | None:
    found = {_label_match(p, name) for p in patterns}
    return "exact" if "exact" in found else ("wildcard" if "wildcard" in found else None)


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def hostname_verdict(cert: x509.Certificate, host: str, mode: str, wildcards: str) -> str | None:
    """Rule 3c: does the server certificate fit the name the client connected to?

    * ``cn``: a subject CN must match (OCPP A00.FR.309: CN = FQDN); ``san``: a SAN dNSName must match
      (RFC 6125); ``san+cn``: the CN must match, and when the certificate lists SAN dNSNames one of them
      must match too (a wildcard on either side makes the match a wildcard match); ``off``: anything.
    * An IP literal host matches a SAN iPAddress (``san``, ``san+cn``) or, in ``cn`` mode, a CN that
      reads as the same address; wildcards play no part.
    * An exact match wins over a wildcard match; a match that needs a wildcard is refused with
      ``cert_invalid:wildcard`` unless ``wildcards = "allow"``.

    Args:
        cert: the server's leaf.
        host: the server name (DNS name or IP literal), compared case-insensitively without a final dot.
        mode: ``TrustStore.hostname``.
        wildcards: ``TrustStore.wildcards``.

    Returns:
        None, ``cert_invalid:hostname_mismatch`` or ``cert_invalid:wildcard``.
    """
    if mode == "off":
        return None
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns, ips = [], []
    address = _as_ip(host)
    if address is not None:
        fits = any(_as_ip(cn) == address for cn in cns) if mode == "cn" else address in ips
        return None if fits else events.CERT_HOSTNAME_MISMATCH
    name = host.strip().rstrip(".").lower()
    if mode == "cn":
        match = _best_match(cns, name)
    elif mode == "san":
        match = _best_match(dns, name)
    else:
        match = _best_match(cns, name)
        if match is not None and dns:
            by_san = _best_match(dns, name)
            match = None if by_san is None else ("exact" if match == by_san == "exact" else "wildcard")
    if match is None:
        return events.CERT_HOSTNAME_MISMATCH
    if match == "wildcard" and wildcards != "allow":
        return events.CERT_WILDCARD
    return None
