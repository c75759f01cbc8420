"""The attackers a :class:`~evsim.world.World` runs on demand: downgrading clients, an impostor CSMS and a
man-in-the-middle relay (the attack primitives are in :mod:`evsim.world.attacks`).

Victims reach an attacker the way they would in the field: the world's :class:`RedirectingNetwork` sends their
connections for the real CSMS's name to the attacker's host, and their current connections are reset so they
reconnect now. An attack with a ``duration`` ends by itself (``attack_ended``).
"""

from __future__ import annotations

import functools
from typing import Literal

import trio
import trio.testing

from evsim.nodes.csms import Csms, CsmsConfig
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
)
from evsim.world.attacks import downgrade_client, mitm_relay
from evsim.world.base import RUN_PASSWORD, Selector
from evsim.world.nodes import NodeHandle
from evsim.world.trust import WorldTls


class WorldAttacks(WorldTls):
    """The attack operations of a :class:`~evsim.world.World`."""

    # ------------------------------------------------------------------ attackers

    def attack_downgrade(
        self, csms: Selector, *, versions: tuple[str, ...] = ("1.2",), count: int = 1
    ) -> None:
        """``count`` clients offer the CSMS only ``versions`` (legacy ones allowed); each records an
        ``attack_result``. They run in tasks of their own; this returns at once."""
        node = self.csms[self._name(csms)]
        trust = self.trust_store(None)
        for i in range(count):
            self.nursery.start_soon(
                functools.partial(
                    downgrade_client,
                    f"attacker-downgrade-{i + 1}",
                    self.network,
                    node.host,
                    node.port,
                    versions=versions,
                    anchors=trust,
                    clock=self.clock,
                    recorder=self.recorder,
                )
            )

    async def attack_wrong_ca(
        self,
        victims: Selector,
        *,
        impersonate: Selector | None = None,
        root: str = "rogue",
        duration: float | None = None,
    ) -> NodeHandle:
        """An impostor CSMS with a certificate for the real CSMS's name from ``root``; the victims' traffic
        for the real CSMS goes to it (and their connections are reset) until ``duration`` ends."""
        return await self._attack_redirect("impostor", victims, impersonate, root, duration)

    async def attack_mitm(
        self,
        victims: Selector,
        *,
        impersonate: Selector | None = None,
        root: str = "rogue",
        duration: float | None = None,
    ) -> NodeHandle:
        """A relay presenting a certificate from ``root`` that forwards plaintext to the real CSMS if a victim
        ever accepts it (``mitm_intercepted``); redirected as :meth:`attack_wrong_ca`."""
        return await self._attack_redirect("mitm", victims, impersonate, root, duration)

    async def _attack_redirect(
        self,
        kind: Literal["impostor", "mitm"],
        victims_sel: Selector,
        impersonate: Selector | None,
        root: str,
        duration: float | None,
    ) -> NodeHandle:
        _, victims = self.targets(victims_sel)
        real_name = (
            self._name(impersonate) if impersonate is not None else self.stations[victims[0]].group.csms
        )
        real = self.csms[real_name]
        self.pki.add_root(root)
        fake = self.pki.server_certificate(
            real.host, real.tls.certificate, at=self.clock.elapsed() - 3600, root=root
        )
        server_tls = ServerTls.build(real.tls.profile, Identity.from_cert_key(fake))
        name = f"attacker-{kind}"
        attacker_host = f"{kind}-{real_name}.attacker"
        node: NodeHandle
        if kind == "impostor":
            impostor = Csms(
                CsmsConfig(
                    name=name,
                    host=attacker_host,
                    port=real.port,
                    security_profile=2,
                    default_password=RUN_PASSWORD,
                ),
                network=self.network,
                server_tls=server_tls,
                clock=self.clock,
                recorder=self.recorder,
            )
            node = NodeHandle(name, attacker_host, impostor.run)
        else:
            listener = await self.network.listen(attacker_host, real.port)
            upstream_tls = ClientTls.build(TlsProfile(), self.trust_store(None))

            async def relay(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await mitm_relay(
                    name,
                    listener,
                    self.network,
                    server_tls=server_tls,
                    upstream_tls=upstream_tls,
                    upstream=(real.host, real.port),
                    clock=self.clock,
                    recorder=self.recorder,
                    task_status=task_status,
                )

            node = NodeHandle(name, attacker_host, relay)
        self.attackers[name] = node
        await node.start_in(self.nursery)
        self.network.redirect(victims, real.host, attacker_host)
        if self.faults is not None:  # reconnect the victims now: drop their connections to the real CSMS
            for sid in victims:
                self.faults.partition(sid, real.host)
                self.faults.heal(sid, real.host)
        if duration is not None:
            self.nursery.start_soon(self._end_attack, duration, node, victims, real.host)
        return node

    async def _end_attack(self, after: float, node: NodeHandle, victims: list[str], host: str) -> None:
        await trio.sleep(after)
        self.network.restore(victims, host)
        node.stop()
        self.recorder.emit("timeline", "attack_ended", attacker=node.name)
