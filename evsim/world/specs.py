"""What the world is told about TLS: one :class:`Tls` value for every node kind, and the spec values in it.

Keys and certificates are generated per run by the world's PKI (:mod:`evsim.world.pki`), so a node does not
get a certificate but a :class:`CertificateSpec` saying how to issue one; a trust store names the run's roots
(:class:`TrustSpec`) and is resolved against the PKI each time a node's TLS configuration is (re)built (after a
root is installed or removed, or a CRL is published); a pin names a key by reference (:class:`PinSpec`). Code
that has its own certificates (tests with a fixed PKI) passes :class:`~evsim.tls.Identity` and
:class:`~evsim.tls.TrustStore` values instead, which are used as they are.

The scenario model (:mod:`evsim.scenario.model`) re-exports these classes: a scenario file's
``[tls.trust.<name>]``, ``[tls.pins.<name>]`` and ``[tls.change.<name>]`` tables are read into them.
"""

from __future__ import annotations

import datetime
import hashlib
import typing
from collections.abc import Callable
from typing import Literal, TypeAlias

import attrs

from evsim.tls.change import ChangePolicy, OnCertChange, OnKeyChange
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.pins import Enforcement, Pin, PinSet, PinState, PinTarget
from evsim.tls.trust import TrustStore

KeyType: TypeAlias = Literal["ec", "rsa"]
HostnameCheck: TypeAlias = Literal["cn", "san", "san+cn", "off"]
WildcardPolicy: TypeAlias = Literal["deny", "allow"]
TrustMode: TypeAlias = Literal["pki", "pinned_peers", "tofu"]


@attrs.frozen(kw_only=True)
class TrustSpec:
    """A ``[tls.trust.<name>]`` table: whom a client trusts and how it checks the server's name.

    Attributes:
        name: the trust store's name.
        roots: names of the run's roots (``root`` is the operator's; a scenario adds ``[pki.roots]``).
        hostname: ``"cn"``, ``"san"``, ``"san+cn"`` or ``"off"``.
        wildcards: ``"deny"`` (OCPP default) or ``"allow"``.
        mode: ``"pki"``, ``"pinned_peers"`` or ``"tofu"`` (no roots in the peer modes).
        time_check: certificate validity check (``evsim.tls.trust.TimeCheck``).
        crl: ``"off"``, ``"leaf"`` or ``"chain"``: check the CRLs the run's PKI publishes for its roots.
        ocsp: ``"off"``, ``"request"`` or ``"require"``: OCSP stapling (the CSMS staples with
            ``ocsp_stapling``).
        on_unknown: ``"fail"`` or ``"soft_fail"`` for an authentic ``unknown`` OCSP status.
        max_depth: longest chain accepted below the leaf; None = the engine's default.
    """

    name: str
    roots: tuple[str, ...] = ("root",)
    hostname: HostnameCheck = "san+cn"
    wildcards: WildcardPolicy = "deny"
    mode: TrustMode = "pki"
    time_check: str = "enforce"
    crl: str = "off"
    ocsp: str = "off"
    on_unknown: str = "fail"
    max_depth: int | None = None


@attrs.frozen(kw_only=True)
class CertificateSpec:
    """A node's certificate, relative to the simulation start.

    Attributes:
        root: name of the root of the run's PKI at the top of its chain.
        issuer: the intermediate CA (``[pki.intermediates]``) that issues it, under ``root``; None: the root
            issues it directly.
        validity: ``notAfter`` = simulation start + ``validity`` seconds.
        not_before: ``notBefore`` = simulation start + ``not_before`` seconds (negative: before the start).
        key_type: ``"ec"`` or ``"rsa"``.
    """

    root: str = "root"
    validity: float = 365 * 86_400.0
    not_before: float = -3_600.0
    key_type: KeyType = "ec"
    issuer: str | None = None


@attrs.frozen(kw_only=True)
class PinSpec:
    """One pin of a ``[tls.pins.<name>]`` table. Keys are generated per run, so a pin names its key by
    reference to the run's PKI; exactly one of ``spki_sha256``, ``csms``, ``root`` and ``intermediate`` is set.

    Attributes:
        target: ``leaf``, ``intermediate``, ``root`` or ``any`` (:mod:`evsim.tls.pins`).
        state: ``active``, ``backup``, ``pending`` or ``released``.
        spki_sha256: a literal key hash (64 hex digits, lower case).
        csms: the CSMS whose server key is pinned (``cert = "csms.<name>"``).
        key: which key of that CSMS: 0 = the key at the start, 1 = the key its first
            ``rotate_certificate`` with a new key switches to ("next"), and so on.
        root: the root CA (``[pki.roots]``) whose key is pinned.
        intermediate: the intermediate CA (``[pki.intermediates]``, or ``station-ca``) whose key is pinned.
        not_after: the pin stops matching this many seconds after the start; None = never.
    """

    target: str
    state: str = "active"
    spki_sha256: str | None = None
    csms: str | None = None
    key: int = 0
    root: str | None = None
    not_after: float | None = None
    intermediate: str | None = None


@attrs.frozen(kw_only=True)
class PinSetSpec:
    """A ``[tls.pins.<name>]`` table: certificate pins a station group applies to its CSMS.

    Attributes:
        name: the pin set's name.
        enforcement: ``enforce`` (a mismatch refuses the connection) or ``report_only``.
        tofu: trust on first use: pin the first CSMS leaf seen when no active pin is live.
        pins: the pins, in file order.
    """

    name: str
    enforcement: str = "enforce"
    tofu: bool = False
    pins: tuple[PinSpec, ...] = ()


@attrs.frozen(kw_only=True)
class ChangeSpec:
    """A ``[tls.change.<name>]`` table: what a station does when the CSMS's certificate or key changes.

    Attributes:
        name: the policy's name.
        on_peer_key_change: ``reject``, ``warn`` or ``accept_and_repin`` (:mod:`evsim.tls.change`).
        on_peer_cert_change_same_key: ``info`` or ``warn``.
    """

    name: str
    on_peer_key_change: str = "warn"
    on_peer_cert_change_same_key: str = "info"


def placeholder_spki(pin: PinSpec) -> str:
    """A stand-in key hash for a pin that names its key by reference (keys are generated per run).

    Two pins naming the same key get the same stand-in, so the TLS layer's duplicate check still works.

    Args:
        pin: the pin.

    Returns:
        64 hex digits.
    """
    if pin.spki_sha256 is not None:
        return pin.spki_sha256
    if pin.csms is not None:
        ref = f"csms:{pin.csms}#{pin.key}"
    else:
        ref = f"root:{pin.root}" if pin.root is not None else f"intermediate:{pin.intermediate}"
    return hashlib.sha256(ref.encode()).hexdigest()


def layer_pin_set(spec: PinSetSpec, spki: Callable[[PinSpec], str], *, start: datetime.datetime) -> PinSet:
    """The TLS layer's :class:`~evsim.tls.pins.PinSet` for a pin-set spec.

    Args:
        spec: the pin set.
        spki: each pin's key hash (:func:`placeholder_spki` when loading, the run's keys when running).
        start: the simulation start (``not_after`` is relative to it).

    Returns:
        The pin set.

    Raises:
        ConfigError: what :class:`~evsim.tls.pins.PinSet` refuses, with a path relative to the table.
    """
    pins = tuple(
        Pin(
            typing.cast(PinTarget, p.target),
            spki(p),
            typing.cast(PinState, p.state),
            None if p.not_after is None else start + datetime.timedelta(seconds=p.not_after),
        )
        for p in spec.pins
    )
    return PinSet(typing.cast(Enforcement, spec.enforcement), pins, (), spec.tofu)


def layer_change_policy(spec: ChangeSpec) -> ChangePolicy:
    """The TLS layer's :class:`~evsim.tls.change.ChangePolicy` for a change spec.

    Raises:
        ConfigError: what the TLS layer refuses (path relative to the table).
    """
    return ChangePolicy(
        typing.cast(OnKeyChange, spec.on_peer_key_change),
        typing.cast(OnCertChange, spec.on_peer_cert_change_same_key),
    )


DEFAULT_TRUST = TrustSpec(name="default")
"""What a node trusts when its :class:`Tls` names nothing: the run's ``root``, hostnames checked (SAN, then CN)."""


@attrs.frozen(kw_only=True)
class Tls:
    """A node's TLS settings: the same value for a CSMS, a Local Controller and a station group.

    Attributes:
        profile: how the node speaks TLS (versions, suites, groups, timeouts...).
        trust: whom the node trusts when it connects to a server (stations; a controller's upstream links): a
            :class:`TrustSpec` naming the run's roots (rebuilt when roots or CRLs change), or a ready
            :class:`~evsim.tls.TrustStore`. None: :data:`DEFAULT_TRUST`.
        client_trust: whom a server trusts for client certificates under security profile 3 (CSMS, controller
            listener). None: the run's ``root`` without a hostname check (station certificates come from its
            station sub-CA).
        certificate: how the world issues the node's own certificate (server certificate of a CSMS or a
            controller; a station's client certificate under profile 3 comes from the station sub-CA).
        identity: a ready certificate and key to use instead of issuing one (e.g. a test PKI's), or a
            function of the node name giving one (a station group: each station its own).
        pins: certificate pins the node applies to its peer, or None.
        change: what the node does when its peer's certificate or key changes, or None.
        ocsp_stapling: a CSMS staples an OCSP response from the run PKI's responder for its root.
        session_cache: stations keep this many TLS sessions and resume them; None: full handshakes only.
    """

    profile: TlsProfile = attrs.field(factory=TlsProfile)
    trust: TrustSpec | TrustStore | None = None
    client_trust: TrustSpec | TrustStore | None = None
    certificate: CertificateSpec = CertificateSpec()
    identity: Identity | Callable[[str], Identity] | None = None
    pins: PinSetSpec | None = None
    change: ChangeSpec | None = None
    ocsp_stapling: bool = False
    session_cache: int | None = None


@attrs.frozen(kw_only=True)
class Route:
    """One endpoint a station group or a controller connects to, in failover order.

    Attributes:
        to: the CSMS or controller (its name).
        priority: lower is tried first (a station's ``NetworkConfigurationPriority`` order).
        profile: the endpoint's own TLS profile; None: the owner's.
        trust: the endpoint's own trust store; None: the owner's.
        pins: the endpoint's own pins (stations only); None: the owner's pins.
    """

    to: str
    priority: int = 0
    profile: TlsProfile | None = None
    trust: TrustSpec | TrustStore | None = None
    pins: PinSetSpec | None = None

    @property
    def overrides_tls(self) -> bool:
        """Whether the endpoint has TLS settings of its own (else the owner's installed ones serve it)."""
        return self.profile is not None or self.trust is not None or self.pins is not None
