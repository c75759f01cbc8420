"""Certificate lifecycle over OCPP in a world: what an operator does to a fleet through its CSMS.

Theory of operation. Unlike the fiat operations of :mod:`evsim.world.trust` (the world swaps a certificate or a
trust store), everything here goes through OCPP and the nodes' own logic: the CSMS holding a station's session
sends TriggerMessage SignChargingStationCertificate (the station then generates a key, sends a CSR, the CSMS
signs it with its CA and the station validates the result and reconnects with it, A02), InstallCertificate or
DeleteCertificate (M04/M05, with the station-side rules), and the security profile upgrade (A05: a new
profile 3 slot first in the station's priority, then Reset). Each operation covers a set of stations (a CSMS's
whole fleet, a group, a station) and is spread uniformly over a window (``spread`` seconds, drawn from the
world's seed), so a fleet of 10,000 does not hit its CSMS at one instant. Every message goes in a task of its
own; the CSMS records each answer (``certificate_call``); a station that could not be reached is recorded as
``certificate_not_sent`` at the ``timeline`` node with the station and the reason, so a report can name it.

The CSMS side also changes here: :meth:`WorldLifecycle.switch_server_certificate` moves a CSMS to a server
certificate from another root (a new hierarchy, for a root rollover), and :meth:`WorldLifecycle.degrade_ca`
makes the CA that signs its stations' CSRs slow or failing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from evsim.errors import ConfigError, OcppError, TransportError, failure_reason
from evsim.nodes.certificates import CSMS_ROOT
from evsim.nodes.csms import Csms
from evsim.nodes.csms_upgrade import upgrade_security_profile
from evsim.ocpp.netprofile import NetworkConnectionProfile
from evsim.pki.keys import certs_to_pem
from evsim.pki.lifecycle import certificate_hash_data
from evsim.world.attackers import WorldAttacks
from evsim.world.base import Selector

CALL_DEADLINE_S = 120.0
"""How long one certificate message to a station may take (trio time) before it counts as not sent."""

SendFn = Callable[[Csms, str], Awaitable[object]]


class WorldLifecycle(WorldAttacks):
    """Certificate operations over OCPP on a :class:`~evsim.world.World` (see the module docstring)."""

    # ------------------------------------------------------------------ which stations

    def fleet_of(self, target: Selector, *, whole: bool = False) -> list[str]:
        """Station ids a lifecycle target covers: a CSMS (every station whose group reaches it), a group, or a
        station id; with ``whole``, in a shard also the stations other shards run."""
        name = self._name(target)
        if name in self.csms:
            return [
                sid
                for g in self.groups.values()
                if g.csms == name
                for sid in (g.whole_ids if whole else g.ids)
            ]
        if whole and name in self.groups:
            return self.groups[name].whole_ids
        _, station_ids = self.targets(name)
        return station_ids

    def holder(self, sid: str) -> Csms | None:
        """The CSMS holding station ``sid``'s session now (directly or through controllers), or None."""
        for node in self.csms.values():
            rec = node.csms.stations.get(sid)
            if rec is not None and rec.session is not None and node.running:
                return node.csms
        return None

    def _fan_out(self, action: str, target: Selector, spread: float, send: SendFn) -> None:
        """Send one message per station of ``target``, each at a uniform random offset in ``[0, spread)``
        (seeded by the world's seed, the action and the time), each in a task of its own; returns at once."""
        if spread < 0:
            raise ConfigError("spread must be >= 0", path="spread", value=spread, fix="use e.g. 60")
        here = set(self.fleet_of(target))
        rng = random.Random(f"{self.seed}:{action}:{round(self.clock.elapsed(), 6)}")
        # drawn for the whole fleet, so a shard gives each of its stations the offset the unsharded run gives it
        draws = [
            (rng.uniform(0.0, spread) if spread > 0 else 0.0, sid)
            for sid in self.fleet_of(target, whole=True)
        ]
        plan = sorted(d for d in draws if d[1] in here)

        async def sender() -> None:
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for offset, sid in plan:
                    await trio.sleep_until(start + offset)
                    nursery.start_soon(self._send_one, action, sid, send)

        self.nursery.start_soon(sender)

    async def _send_one(self, action: str, sid: str, send: SendFn) -> None:
        csms = self.holder(sid)
        reason = "station offline"
        if csms is not None:
            try:
                with trio.fail_after(CALL_DEADLINE_S):
                    await send(csms, sid)
                return
            except KeyError:
                pass  # the session went away in between
            except (OcppError, TransportError) as exc:
                reason = failure_reason(exc)
            except trio.TooSlowError:
                reason = "timeout"
        self.recorder.emit("timeline", "certificate_not_sent", action=action, station=sid, reason=reason)

    # ------------------------------------------------------------------ operations over OCPP

    def trigger_renewal(self, target: Selector, *, spread: float = 0.0) -> None:
        """TriggerMessage SignChargingStationCertificate to each station of ``target`` (A02), spread over
        ``spread`` seconds; returns at once."""

        async def send(csms: Csms, sid: str) -> object:
            return await csms.certificates.trigger_message(sid)

        self._fan_out("trigger_renewal", target, spread, send)

    def install_certificate(
        self, target: Selector, root: str, *, certificate_type: str = CSMS_ROOT, spread: float = 0.0
    ) -> None:
        """InstallCertificate of the PKI root ``root`` (as ``certificate_type``) to each station of ``target``
        (M05), spread over ``spread`` seconds; returns at once."""
        pem = certs_to_pem((self.pki.roots[root].cert,)).decode()

        async def send(csms: Csms, sid: str) -> object:
            return await csms.certificates.install_certificate(sid, certificate_type, pem)

        self._fan_out("install_certificate", target, spread, send)

    def delete_certificate(self, target: Selector, root: str, *, spread: float = 0.0) -> None:
        """DeleteCertificate of the PKI root ``root`` on each station of ``target`` (M04), spread over
        ``spread`` seconds; returns at once."""
        hash_data = certificate_hash_data(self.pki.roots[root].cert)

        async def send(csms: Csms, sid: str) -> object:
            return await csms.certificates.delete_certificate(sid, hash_data)

        self._fan_out("delete_certificate", target, spread, send)

    def upgrade_security_profile(self, target: Selector, to: str, *, spread: float = 0.0) -> None:
        """A05: the CSMS holding each station's session moves it to the CSMS endpoint ``to`` at that
        endpoint's (higher) security profile: SetNetworkProfile in a free slot, that slot first in
        NetworkConfigurationPriority, Reset OnIdle (:func:`~evsim.nodes.csms_upgrade.upgrade_security_profile`);
        spread over ``spread`` seconds; returns at once. A station without a client certificate refuses
        (``security_upgrade_refused``); one whose new connection fails falls back to its old slots."""
        name = self._name(to)
        if name not in self.csms:
            raise ConfigError(f"{name!r} is not a CSMS", path="to", value=name, fix="name a profile 3 CSMS")
        node = self.csms[name]
        profile = NetworkConnectionProfile(self.url(name, node.security_profile), node.security_profile)

        async def send(csms: Csms, sid: str) -> object:
            return await upgrade_security_profile(csms, sid, profile)

        self._fan_out("upgrade_security_profile", target, spread, send)

    # ------------------------------------------------------------------ the CSMS side

    def switch_server_certificate(self, target: Selector, root: str, *, issuer: str | None = None) -> None:
        """Move a CSMS to a server certificate issued by ``root`` now, or by the intermediate CA ``issuer``
        under it (its current key, its certificate spec's validity): the next handshakes present the new chain;
        open connections are undisturbed."""
        name = self._name(target)
        if name not in self.csms:
            raise ConfigError(f"{name!r} is not a CSMS", value=name, fix="name a CSMS")
        node = self.csms[name]
        if node.security_profile == 1 or node.tls.identity is not None:
            raise ConfigError(
                f"CSMS {name!r} has no server certificate of the run's PKI",
                value=name,
                fix="name another CSMS",
            )
        node.tls = attrs.evolve(
            node.tls, certificate=attrs.evolve(node.tls.certificate, root=root, issuer=issuer)
        )
        cert = self.pki.server_certificate(node.host, node.tls.certificate, at=self.clock.elapsed())
        self._install_server_certificate(node, cert)

    def degrade_ca(self, target: Selector, *, delay: float = 0.0, failure_rate: float = 0.0) -> None:
        """From now on each CSR the CSMS signs waits ``delay`` seconds for its CA, which then fails with
        probability ``failure_rate`` (0, 0: a healthy CA again)."""
        name = self._name(target)
        signer = self.csms[name].signer if name in self.csms else None
        if signer is None:
            raise ConfigError(f"{name!r} is not a CSMS of the world", value=name, fix="name a CSMS")
        if not (delay >= 0 and 0.0 <= failure_rate <= 1.0):
            raise ConfigError(
                "delay must be >= 0 and failure_rate 0..1",
                value=(delay, failure_rate),
                fix="e.g. delay = 30, failure_rate = 0.1",
            )
        signer.delay_s = delay
        signer.failure_rate = failure_rate


__all__ = ["CALL_DEADLINE_S", "WorldLifecycle"]
