"""A station's certificates, managed over OCPP (A02/A03, M03-M05): the sans-IO decisions.

:class:`StationCertificates` holds what a charging station knows about certificates and decides every
certificate message; the station (``evsim.nodes.station``) only sends what it asks for and reports what
happened. It never touches the network or trio: it is fed the CSMS's payloads, the trio time ``now`` (for
resend timers) and the station's wall clock ``now_utc`` (for validity).

**Renewal (A02 by TriggerMessage, A03 by itself).** :meth:`StationCertificates.trigger` accepts a
``SignChargingStationCertificate`` trigger; :meth:`~StationCertificates.poll` then generates the new key pair
(after the TriggerMessageResponse went out, A02.FR.02: the station calls it from its sender) and returns the
SignCertificateRequest (a PKCS#10 CSR with CN = station id, O = ``OrganizationName``); the private key stays
here (A02.FR.05). :meth:`~StationCertificates.poll` also starts a renewal on its own when the certificate in
use expires within ``renewal_threshold_s`` (A03.FR.02; default one month). Once the CSMS accepted the CSR,
no CertificateSigned within ``CertSigningWaitMinimum`` seconds makes it resend, the wait doubling each time,
``CertSigningRepeatTimes`` times; then it gives up (``csr_abandoned``) until triggered again (A02.FR.17-19).

**CertificateSigned** (:meth:`~StationCertificates.certificate_signed`) is checked by
:func:`evsim.pki.lifecycle.check_signed_chain` (size first, then CN/O, the pending key, validity at the
station's clock, the path to an installed CSMS root, ``MaxCertificateChainSize``). Invalid: Rejected, one
``certificate_signed_rejected`` event and the critical ``InvalidChargingStationCertificate`` security event,
and the pending request is dropped (A02.FR.07/20). Valid: Accepted; the new certificate becomes the
*candidate* and the station reconnects with it (A02.FR.08). The old certificate stays until a connection
with the new one succeeds (:meth:`~StationCertificates.connection_succeeded`: ``client_certificate_switched``);
after ``renewed_attempts`` failed attempts with it the candidate is discarded, the old certificate is used
again and ``DiscardedRenewedClientCertificate`` is queued (A02.FR.28/29).

**Certificate management (M03-M05).** InstallCertificate of a root (a CA certificate valid now; an identical
one is replaced, M05.FR.17; at most ``certificate_entries`` entries; with ``additional_root_check`` a new
CSMS root must be signed by the current one, which stays as fallback), DeleteCertificate (the station
certificate cannot be deleted: Failed, M04.FR.06) and GetInstalledCertificateIds. Every change to what the
TLS link uses (roots, client certificate) bumps :attr:`StationCertificates.version`, so the station rebuilds
its TLS configuration for the next connection.

**Device model.** The SecurityCtrlr variables (:meth:`~StationCertificates.variables`,
:meth:`~StationCertificates.set_variable`): OrganizationName, CertificateEntries, MaxCertificateChainSize,
CertSigningWaitMinimum, CertSigningRepeatTimes, AdditionalRootCertificateCheck, and evsim's
``CertRenewalThreshold`` (seconds before notAfter when A03 starts).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
from cryptography import x509

from evsim.errors import ConfigError, PkiError, TransportError
from evsim.pki.ca import CertKey, make_csr
from evsim.pki.keys import KeyType, PrivateKey, cert_fingerprint, generate_key, public_key_der
from evsim.pki.lifecycle import (
    CHAIN_MAX_BYTES,
    CertificateRefused,
    certificate_hash_data,
    check_root,
    check_signed_chain,
    hash_data_matches,
    load_certificate,
)

CHARGING_STATION_CERTIFICATE: Final = "ChargingStationCertificate"
CSMS_ROOT: Final = "CSMSRootCertificate"
MANUFACTURER_ROOT: Final = "ManufacturerRootCertificate"
ROOT_TYPES: Final = (
    CSMS_ROOT,
    MANUFACTURER_ROOT,
    "V2GRootCertificate",
    "MORootCertificate",
    "OEMRootCertificate",
)
"""``InstallCertificateUseEnumType`` (OEMRootCertificate: 2.1)."""
INSTALL_MAX_BYTES: Final = 10000
"""The largest InstallCertificate ``certificate`` looked at (2.1's maxLength; 2.0.1 allows 5500)."""

ONE_MONTH_S: Final = 30 * 86400.0
RENEWAL_RETRY_S: Final = 86400.0
"""After a renewal the station started itself failed or was given up, it tries again this much later."""

EmitFn = Callable[..., object]
"""``emit(kind, **fields)``: record one event of the station."""
SecurityEventFn = Callable[[str, str], None]
"""``security_event(type, tech_info)``: queue a SecurityEventNotification."""


class CertificateSwitch(TransportError):
    """The station ends its connection to reconnect with its renewed certificate (A02.FR.08)."""

    reason = "certificate_switch"


def _positive_int(value: object, *, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{what} must be an integer {low}..{high}", path=f"certificates.{what}", value=value
        )
    return value


@attrs.frozen
class CertificateSettings:
    """A station's certificate configuration (its SecurityCtrlr device-model variables).

    Args:
        organization_name: ``SecurityCtrlr.OrganizationName``: O of the CSR (A02: must be set).
        key_type: the key pair generated for a CSR: ``"ec"`` or ``"rsa"``.
        key_size: its size in bits (None: P-256 / RSA-2048).
        max_chain_size: ``MaxCertificateChainSize`` (bytes of a CertificateSigned chain, 1..10000).
        sign_wait_minimum_s: ``CertSigningWaitMinimum`` (s).
        sign_repeat_times: ``CertSigningRepeatTimes``.
        renewal_threshold_s: A03: renew when the certificate expires within this (s; default 30 days;
            ``SecurityCtrlr.CertRenewalThreshold``, an evsim variable).
        certificate_entries: the maxLimit of ``CertificateEntries`` (installed roots plus the station's own).
        additional_root_check: ``AdditionalRootCertificateCheck``.
        renewed_attempts: connection attempts with a renewed certificate before it is discarded.
    """

    organization_name: str = "evsim"
    key_type: KeyType = "ec"
    key_size: int | None = None
    max_chain_size: int = CHAIN_MAX_BYTES
    sign_wait_minimum_s: int = 60
    sign_repeat_times: int = 3
    renewal_threshold_s: float = ONE_MONTH_S
    certificate_entries: int = 20
    additional_root_check: bool = False
    renewed_attempts: int = 3

    def __attrs_post_init__(self) -> None:
        if self.key_type not in ("ec", "rsa"):
            raise ConfigError("key_type must be ec or rsa", path="certificates.key_type", value=self.key_type)
        if self.key_size is not None:
            try:
                if self.key_type == "rsa" and not 2048 <= self.key_size <= 8192:
                    raise PkiError("RSA keys are 2048..8192 bits")
                if self.key_type == "ec" and self.key_size not in (256, 384, 521):
                    raise PkiError("EC keys are 256, 384 or 521 bits")
            except PkiError as exc:
                raise ConfigError(str(exc), path="certificates.key_size", value=self.key_size) from exc
        _positive_int(self.max_chain_size, low=1, high=CHAIN_MAX_BYTES, what="max_chain_size")
        _positive_int(self.sign_wait_minimum_s, low=1, high=7 * 86400, what="sign_wait_minimum_s")
        _positive_int(self.sign_repeat_times, low=0, high=16, what="sign_repeat_times")
        _positive_int(self.certificate_entries, low=1, high=1000, what="certificate_entries")
        _positive_int(self.renewed_attempts, low=1, high=100, what="renewed_attempts")
        if not 0 <= self.renewal_threshold_s <= 3650 * 86400:
            raise ConfigError(
                "renewal_threshold_s must be 0..3650 days",
                path="certificates.renewal_threshold_s",
                value=self.renewal_threshold_s,
            )


@attrs.define
class _Request:
    """A certificate signing request in progress."""

    trigger: str  # "TriggerMessage" or "renewal"
    key: PrivateKey | None = None
    csr: str = ""
    sends: int = 0
    send_at: float = 0.0  # trio time of the next (re)send; inf while waiting for an answer
    accepted: bool = False


def _valid_at(cert: x509.Certificate, now_utc: _dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now_utc <= cert.not_valid_after_utc


def _variable_int(value: str, *, low: int, high: int) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


class StationCertificates:
    """The certificate state and decisions of one station (see the module doc).

    Args:
        station_id: the station's serial number (CN of its certificate).
        settings: the device-model values.
        identity: the client certificate installed at start (None: none yet).
        csms_roots: the installed CSMSRootCertificates (the station's TLS trust anchors).
        emit: records one event (``emit(kind, **fields)``).
        security_event: queues a SecurityEventNotification (``security_event(type, tech_info)``).
        key_factory: makes a key pair (``key_factory(key_type, size)``; tests may pass a cheaper one).
    """

    def __init__(
        self,
        station_id: str,
        settings: CertificateSettings,
        *,
        identity: CertKey | None,
        csms_roots: Sequence[x509.Certificate],
        emit: EmitFn,
        security_event: SecurityEventFn,
        key_factory: Callable[[KeyType, int | None], PrivateKey] | None = None,
    ) -> None:
        self.station_id = station_id
        self.settings = settings
        self.identity = identity
        self.candidate: CertKey | None = None
        self.candidate_failures = 0
        self.roots: dict[str, list[x509.Certificate]] = {t: [] for t in ROOT_TYPES}
        self.roots[CSMS_ROOT] = list(csms_roots)
        self.root_fallback: x509.Certificate | None = None
        self.version = 0
        """Bumped whenever the roots or the client certificate to use change."""
        self.reconnect_requested = False
        self.renewals = 0
        """Certificates accepted from CertificateSigned."""
        self._emit = emit
        self._security_event = security_event
        self._key_factory = key_factory or (lambda kind, size: generate_key(kind, size=size))
        self._request: _Request | None = None
        self._renewal_not_before = -math.inf

    # ------------------------------------------------------------ views

    @property
    def pending(self) -> bool:
        """A signing request is in progress."""
        return self._request is not None

    @property
    def planned(self) -> bool:
        """:meth:`poll` may have something to send, now or later (a request in progress or a renewal to
        plan). False lets the caller skip reading the clocks for :meth:`poll` and :meth:`next_deadline`."""
        return self._request is not None or self._renewal_at() is not None

    def client_certificate(self) -> CertKey | None:
        """The certificate the next connection uses: the candidate, else the installed one."""
        return self.candidate if self.candidate is not None else self.identity

    def anchors(self) -> tuple[x509.Certificate, ...]:
        """The CSMS roots the TLS link trusts (with the rollover fallback)."""
        roots = list(self.roots[CSMS_ROOT])
        if self.root_fallback is not None and self.root_fallback not in roots:
            roots.append(self.root_fallback)
        return tuple(roots)

    def valid_client_certificate(self, now_utc: _dt.datetime) -> CertKey | None:
        """A client certificate valid at ``now_utc`` (the installed one, else a candidate), or None."""
        for cert in (self.identity, self.candidate):
            if cert is not None and _valid_at(cert.cert, now_utc):
                return cert
        return None

    def valid_csms_root(self, now_utc: _dt.datetime) -> bool:
        """Whether a CSMS root valid at ``now_utc`` is installed."""
        return any(_valid_at(root, now_utc) for root in self.anchors())

    def entries(self) -> int:
        """``CertificateEntries``: installed certificates, the station's own included."""
        return sum(len(v) for v in self.roots.values()) + (self.identity is not None)

    # ------------------------------------------------------------ A02 / A03

    def trigger(self, now: float) -> str:
        """TriggerMessage SignChargingStationCertificate: ``"Accepted"`` or ``"Rejected"`` (no organization).

        A new request replaces one in progress (a new key pair, a fresh resend schedule).
        """
        if not self.settings.organization_name:
            self._emit("csr_not_started", reason="no_organization_name")
            return "Rejected"
        self._request = _Request("TriggerMessage", send_at=now)
        return "Accepted"

    def next_deadline(self, now: float, now_utc: _dt.datetime) -> float:
        """The trio time :meth:`poll` has something to do next (inf: nothing planned)."""
        if self._request is not None:
            return self._request.send_at
        renew_at = self._renewal_at()
        if renew_at is None:
            return math.inf
        return max(now + max(0.0, (renew_at - now_utc).total_seconds()), self._renewal_not_before)

    def _renewal_at(self) -> _dt.datetime | None:
        if self.identity is None or self.candidate is not None or not self.settings.organization_name:
            return None
        threshold = _dt.timedelta(seconds=self.settings.renewal_threshold_s)
        return self.identity.cert.not_valid_after_utc - threshold

    def poll(self, now: float, now_utc: _dt.datetime) -> dict[str, Any] | None:
        """What to send now: a SignCertificateRequest payload, or None.

        Starts an A03 renewal when due, makes the key pair and CSR of a new request, resends an accepted one
        whose certificate did not come in time, and gives up after the last resend.
        """
        if self._request is None:
            renew_at = self._renewal_at()
            if renew_at is None or now_utc < renew_at or now < self._renewal_not_before:
                return None
            self._request = _Request("renewal", send_at=now)
            not_after = self.identity.cert.not_valid_after_utc if self.identity is not None else None
            self._emit("renewal_started", not_after=not_after.isoformat() if not_after else "")
        request = self._request
        if now < request.send_at:
            return None
        limit = 1 + self.settings.sign_repeat_times
        if request.accepted and request.sends >= limit:
            self._give_up("no CertificateSigned after the last resend")
            return None
        if request.key is None:
            request.key = self._key_factory(self.settings.key_type, self.settings.key_size)
            request.csr = make_csr(request.key, self.station_id, self.settings.organization_name).decode()
        request.sends += 1
        request.send_at = math.inf
        self._emit("csr_sent", attempt=request.sends, trigger=request.trigger)
        return {"csr": request.csr, "certificateType": CHARGING_STATION_CERTIFICATE}

    def request_answered(self, status: str, now: float) -> None:
        """The SignCertificateResponse ``status``: Accepted arms the resend timer, anything else ends it."""
        request = self._request
        if request is None:
            return
        if status != "Accepted":
            self._request = None
            self._block_renewal(request, now)
            self._emit("csr_rejected", status=status, trigger=request.trigger)
            return
        request.accepted = True
        self._arm_resend(request, now)

    def request_failed(self, reason: str, now: float) -> None:
        """No SignCertificateResponse (timeout, CALLERROR, link lost): try again on the resend schedule."""
        request = self._request
        if request is None or request.send_at != math.inf:
            return
        self._emit("csr_unanswered", reason=reason, attempt=request.sends)
        if request.sends >= 1 + self.settings.sign_repeat_times:
            self._give_up(f"no answer to the last attempt ({reason})")
            return
        self._arm_resend(request, now)

    def _arm_resend(self, request: _Request, now: float) -> None:
        request.send_at = now + self.settings.sign_wait_minimum_s * 2 ** (request.sends - 1)

    def _give_up(self, why: str) -> None:
        request = self._request
        assert request is not None
        self._request = None
        self._emit("csr_abandoned", sends=request.sends, reason=why, trigger=request.trigger)

    def _block_renewal(self, request: _Request, now: float) -> None:
        if request.trigger == "renewal":
            self._renewal_not_before = now + RENEWAL_RETRY_S

    def certificate_signed(
        self, payload: dict[str, Any], now: float, now_utc: _dt.datetime
    ) -> dict[str, Any]:
        """Answer a CertificateSignedRequest (A02.FR.06-16); see the module doc."""
        request = self._request
        cert_type = payload.get("certificateType", CHARGING_STATION_CERTIFICATE)
        try:
            if cert_type != CHARGING_STATION_CERTIFICATE:
                raise CertificateRefused(
                    "unsupported_type", f"certificateType {cert_type!r} is not supported"
                )
            expected = (
                public_key_der(request.key) if request is not None and request.key is not None else None
            )
            path = check_signed_chain(
                payload["certificateChain"],
                anchors=self.anchors(),
                now=now_utc,
                expected_cn=self.station_id,
                expected_org=self.settings.organization_name,
                expected_public_key_der=expected,
                max_bytes=self.settings.max_chain_size,
            )
        except CertificateRefused as exc:
            self._emit("certificate_signed_rejected", reason=exc.reason, detail=str(exc)[:300])
            self._security_event("InvalidChargingStationCertificate", f"{exc.reason}: {exc}"[:255])
            if request is not None and exc.reason != "no_pending_request":
                self._request = None  # A02.FR.20: no new request until triggered again
                self._block_renewal(request, now)
            return {
                "status": "Rejected",
                "statusInfo": {"reasonCode": exc.reason, "additionalInfo": str(exc)[:512]},
            }
        assert request is not None and request.key is not None
        self.candidate = CertKey(path[0], request.key, path[1:])
        self.candidate_failures = 0
        self._request = None
        self.renewals += 1
        self.version += 1
        self.reconnect_requested = True
        self._emit(
            "certificate_signed_accepted",
            serial=format(path[0].serial_number, "x"),
            not_after=path[0].not_valid_after_utc.isoformat(),
            trigger=request.trigger,
        )
        return {"status": "Accepted"}

    def take_reconnect(self) -> bool:
        """True once after an accepted certificate: the station should reconnect now."""
        wanted, self.reconnect_requested = self.reconnect_requested, False
        return wanted

    def connection_succeeded(self) -> None:
        """A connection (BootNotification Accepted) with :meth:`client_certificate`: commit a candidate."""
        if self.candidate is not None:
            old = self.identity
            self.identity, self.candidate = self.candidate, None
            self._emit(
                "client_certificate_switched",
                serial=format(self.identity.cert.serial_number, "x"),
                previous_serial=format(old.cert.serial_number, "x") if old is not None else "",
            )
        if self.root_fallback is not None and self._fallback_releasable():
            self._emit("root_fallback_released", fingerprint=cert_fingerprint(self.root_fallback)[:16])
            self.root_fallback = None
            self.version += 1

    def _fallback_releasable(self) -> bool:
        # Without partial-chain verification a trust anchor must be self-signed: a new root signed by the old
        # one only works with the old one still installed, so the fallback is kept until it is deleted.
        return all(r.issuer == r.subject for r in self.roots[CSMS_ROOT])

    def connection_failed(self, used_candidate: bool) -> None:
        """A connection attempt failed; after ``renewed_attempts`` with the candidate, discard it (A02.FR.28)."""
        if not used_candidate or self.candidate is None:
            return
        self.candidate_failures += 1
        if self.candidate_failures < self.settings.renewed_attempts:
            return
        serial = format(self.candidate.cert.serial_number, "x")
        self.candidate = None
        self.version += 1
        self._emit("client_certificate_discarded", serial=serial, attempts=self.candidate_failures)
        self._security_event("DiscardedRenewedClientCertificate", f"serial {serial}")

    # ------------------------------------------------------------ out of band

    def provision(
        self,
        *,
        identity: CertKey | None = None,
        add_roots: Sequence[x509.Certificate] = (),
        remove_roots: Sequence[x509.Certificate] = (),
    ) -> None:
        """Changes made outside OCPP (an installer on site, a scenario's fiat): a new client certificate
        (replacing the installed one and any candidate) and CSMS roots added or removed.

        The station's configured TLS is rebuilt by whoever provisions; :attr:`version` moves only once OCPP
        has changed something (until then the configured TLS is used as it is)."""
        if identity is not None:
            self.identity, self.candidate, self.candidate_failures = identity, None, 0
        store = self.roots[CSMS_ROOT]
        for cert in add_roots:
            if cert not in store:
                store.append(cert)
        for cert in remove_roots:
            if cert in store:
                store.remove(cert)
            if self.root_fallback == cert:
                self.root_fallback = None
        if self.version:
            self.version += 1

    # ------------------------------------------------------------ M03 - M05

    def install(self, payload: dict[str, Any], now_utc: _dt.datetime) -> dict[str, Any]:
        """Answer InstallCertificate (M05)."""
        use = payload.get("certificateType", "")
        try:
            if use not in ROOT_TYPES:
                raise CertificateRefused("unsupported_type", f"certificateType {use!r} is not supported")
            cert = load_certificate(payload["certificate"], max_bytes=INSTALL_MAX_BYTES)
            store = self.roots[use]
            if cert in store:  # M05.FR.17: identical certificate: replaced
                self._emit(
                    "certificate_installed", type=use, replaced=True, fingerprint=cert_fingerprint(cert)[:16]
                )
                return {"status": "Accepted"}
            current = (
                store[0] if (use == CSMS_ROOT and self.settings.additional_root_check and store) else None
            )
            check_root(cert, now=now_utc, current_root=current)
            if self.entries() >= self.settings.certificate_entries:
                raise CertificateRefused(
                    "entries_full", f"CertificateEntries is at its limit {self.settings.certificate_entries}"
                )
        except CertificateRefused as exc:
            self._emit(
                "certificate_install_rejected", type=str(use)[:40], reason=exc.reason, detail=str(exc)[:300]
            )
            return {
                "status": "Rejected",
                "statusInfo": {"reasonCode": exc.reason, "additionalInfo": str(exc)[:512]},
            }
        if current is not None:  # M05.FR.09-16: one root, the old one kept as fallback
            self.root_fallback = current
            store.clear()
        store.append(cert)
        if use == CSMS_ROOT:
            self.version += 1
        self._emit(
            "certificate_installed",
            type=use,
            replaced=False,
            subject=cert.subject.rfc4514_string()[:200],
            fingerprint=cert_fingerprint(cert)[:16],
        )
        return {"status": "Accepted"}

    def delete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer DeleteCertificate (M04): Accepted, Failed (the station certificate) or NotFound."""
        given = payload["certificateHashData"]
        own = self.identity
        if own is not None:
            issuer = own.intermediates[0] if own.intermediates else None
            if issuer is not None and hash_data_matches(given, own.cert, issuer):
                self._emit("certificate_delete_refused", reason="station_certificate")
                return {"status": "Failed", "statusInfo": {"reasonCode": "StationCertificate"}}
        for use, store in self.roots.items():
            for cert in store:
                if hash_data_matches(given, cert):
                    store.remove(cert)
                    if use == CSMS_ROOT:
                        self.version += 1
                    self._emit("certificate_deleted", type=use, fingerprint=cert_fingerprint(cert)[:16])
                    return {"status": "Accepted"}
        if self.root_fallback is not None and hash_data_matches(given, self.root_fallback):
            self.root_fallback = None
            self.version += 1
            self._emit("certificate_deleted", type=CSMS_ROOT, fallback=True)
            return {"status": "Accepted"}
        return {"status": "NotFound"}

    def installed_ids(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer GetInstalledCertificateIds (M03)."""
        wanted = payload.get("certificateType") or list(ROOT_TYPES)
        chain: list[dict[str, Any]] = []
        for use in ROOT_TYPES:
            if use not in wanted:
                continue
            certs = list(self.roots[use])
            if use == CSMS_ROOT and self.root_fallback is not None and self.root_fallback not in certs:
                certs.append(self.root_fallback)
            chain.extend(
                {"certificateType": use, "certificateHashData": certificate_hash_data(c)} for c in certs
            )
        if not chain:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": chain}

    # ------------------------------------------------------------ device model

    def variables(self) -> dict[str, str]:
        """The SecurityCtrlr variables this module owns, by name."""
        s = self.settings
        return {
            "OrganizationName": s.organization_name,
            "CertificateEntries": str(self.entries()),
            "MaxCertificateChainSize": str(s.max_chain_size),
            "CertSigningWaitMinimum": str(s.sign_wait_minimum_s),
            "CertSigningRepeatTimes": str(s.sign_repeat_times),
            "AdditionalRootCertificateCheck": str(s.additional_root_check).lower(),
            "CertRenewalThreshold": str(int(s.renewal_threshold_s)),
        }

    def set_variable(self, name: str, value: str) -> tuple[str, str | None]:
        """SetVariables of one of :meth:`variables`: ``(attributeStatus, reasonCode or None)``."""
        s = self.settings
        if name == "OrganizationName":
            if not 1 <= len(value) <= 64:
                return "Rejected", "ValueOutOfRange"
            self.settings = attrs.evolve(s, organization_name=value)
        elif name == "CertSigningWaitMinimum":
            number = _variable_int(value, low=1, high=7 * 86400)
            if number is None:
                return "Rejected", "ValueOutOfRange"
            self.settings = attrs.evolve(s, sign_wait_minimum_s=number)
        elif name == "CertSigningRepeatTimes":
            number = _variable_int(value, low=0, high=16)
            if number is None:
                return "Rejected", "ValueOutOfRange"
            self.settings = attrs.evolve(s, sign_repeat_times=number)
        elif name == "CertRenewalThreshold":
            number = _variable_int(value, low=0, high=3650 * 86400)
            if number is None:
                return "Rejected", "ValueOutOfRange"
            self.settings = attrs.evolve(s, renewal_threshold_s=float(number))
        elif name in ("CertificateEntries", "MaxCertificateChainSize", "AdditionalRootCertificateCheck"):
            return "Rejected", "ReadOnly"
        else:
            return "UnknownVariable", None
        self._emit(
            "certificate_variable_set",
            variable=name,
            value=value if name != "OrganizationName" else value[:64],
        )
        return "Accepted", None
