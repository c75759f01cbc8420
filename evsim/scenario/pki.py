"""The per-run PKI of a scenario: named roots, the station sub-CA, CSMS server and station certificates.

Every certificate is issued at the simulation's time (``start`` plus an offset), so expiry happens in virtual
time exactly where the scenario says.
"""

from __future__ import annotations

import datetime as _dt
import math

import attrs

from evsim.pki import CertificateAuthority, CertKey
from evsim.scenario.model import CertificateSpec, Scenario

#: CA validity: long enough for any scenario (the loader caps durations at 100 years).
CA_DAYS = 36_500


def issue_window(start: _dt.datetime, offset_s: float, validity_s: float) -> tuple[_dt.datetime, int]:
    """The ``now`` and whole ``days`` to pass to the CA so the certificate ends exactly at
    ``start + offset_s + validity_s`` (the CA issues whole days; the start is moved back instead)."""
    days = max(1, math.ceil(validity_s / 86_400))
    end = start + _dt.timedelta(seconds=offset_s + validity_s)
    return end - _dt.timedelta(days=days), days


@attrs.define
class ScenarioPki:
    """Roots by name (``root`` always exists), the station sub-CA under ``root``, and issued certificates."""

    start: _dt.datetime
    organization: str
    roots: dict[str, CertificateAuthority]
    station_ca: CertificateAuthority
    _stations: dict[str, CertKey] = attrs.field(factory=dict)

    @classmethod
    def build(cls, scenario: Scenario, start: _dt.datetime) -> ScenarioPki:
        spec = scenario.pki
        org = spec.organization
        ca_start = start - _dt.timedelta(days=1)
        roots = {
            "root": CertificateAuthority.create_root(
                f"{org} CSMS Root CA", org, now=ca_start, days=CA_DAYS, key_type=spec.key_type
            )
        }
        for name, root in spec.roots.items():
            if name == "root":
                continue
            roots[name] = CertificateAuthority.create_root(
                f"{name} Root CA", name, now=ca_start, days=CA_DAYS, key_type=root.key_type
            )
        station_ca = roots["root"].create_sub_ca(
            f"{org} Charging Station Sub-CA", org, now=ca_start, days=CA_DAYS, key_type=spec.key_type
        )
        return cls(start=start, organization=org, roots=roots, station_ca=station_ca)

    def server_certificate(
        self, host: str, cert: CertificateSpec, *, at: float = 0.0, root: str | None = None
    ) -> CertKey:
        """A CSMS certificate for ``host`` valid from ``at + not_before`` to ``at + validity`` (seconds from start)."""
        now, days = issue_window(self.start, at, cert.validity)
        ca = self.roots[root or cert.root]
        return ca.issue_server(host, now=now, days=days, key_type=cert.key_type)

    def controller_certificate(self, host: str, cert: CertificateSpec, *, at: float = 0.0) -> CertKey:
        """A Local Controller's own certificate: CN = its host (OCPP-J §6.5), O = the operator (profile 3
        upstream gates check it), no EKU, so it serves as TLS server and client certificate."""
        now, days = issue_window(self.start, at, cert.validity)
        return self.roots[cert.root].issue_server(
            host, org=self.organization, now=now, days=days, key_type=cert.key_type
        )

    def expired_server_certificate(self, host: str, cert: CertificateSpec, *, at: float) -> CertKey:
        """A certificate for ``host`` whose validity ended one second before ``at``."""
        now, days = issue_window(self.start, at - 86_400 - 1, 86_400)
        return self.roots[cert.root].issue_server(host, now=now, days=days, key_type=cert.key_type)

    def station_certificate(
        self, station_id: str, *, validity_s: float, at: float = 0.0, renew: bool = False
    ) -> CertKey:
        """The station certificate (CN = id, O = organization), issued once (again, from ``at``, with ``renew``)."""
        if renew or station_id not in self._stations:
            now, days = issue_window(self.start, at, validity_s)
            self._stations[station_id] = self.station_ca.issue_client(
                station_id, self.organization, now=now, days=days
            )
        return self._stations[station_id]
