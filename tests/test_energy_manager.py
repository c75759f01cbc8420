"""The energy manager and stations' SHIP links on the in-memory network (and once on loopback): pairing
window, auto-accept, registration, re-keying, unpairing, an impostor, hostile SHIP peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import trio
import trio.testing

from evsim.clock import SimClock
from evsim.errors import ConfigError, UpgradeRejected
from evsim.net import TcpNetwork, VirtualNetwork
from evsim.net.base import Network
from evsim.nodes.energy_manager import EnergyManager, EnergyManagerConfig
from evsim.nodes.ship_link import SHIP_TRUST, ShipLink, ShipLinkConfig
from evsim.nodes.ship_session import SHIP_PATH, ship_profile
from evsim.pki import CertKey, issue_self_signed, ski
from evsim.recorder import Event, Recorder
from evsim.ship.messages import CMI
from evsim.tls import ClientTls, Identity, tls_connect
from evsim.tls.pairing import PeerTrust, register
from evsim.tls.peer import PeerPolicy
from evsim.world import open_world
from evsim.world.actions import OpenPairingWindow
from evsim.world.specs import Route, Tls
from evsim.ws import WebSocket, ws_client
from tests.pki_fixtures import TEST_NOW

HEMS_HOST = "hems"
HEMS_KEY = issue_self_signed("HEMS-0001", now=TEST_NOW)


class Watch:
    """A recorder sink that wakes waiters on every event."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def __call__(self, event: Event) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()


@attrs.define
class Env:
    clock: SimClock
    recorder: Recorder
    watch: Watch
    net: Network
    nursery: trio.Nursery
    links: dict[str, tuple[ShipLink, trio.CancelScope]] = attrs.field(factory=dict)

    async def hems(self, confirm_s: float = 0.0, **pairing: object) -> EnergyManager:
        trust = PeerTrust(**pairing)  # type: ignore[arg-type]
        node = EnergyManager(
            EnergyManagerConfig(
                "hems", HEMS_HOST, HEMS_KEY, port=0 if self.tcp else 4711, pairing=trust, confirm_s=confirm_s
            ),
            self.net,
            self.clock,
            self.recorder,
        )
        await self.nursery.start(node.run)
        return node

    @property
    def tcp(self) -> bool:
        return isinstance(self.net, TcpNetwork)

    async def station(
        self,
        name: str,
        hems: EnergyManager,
        *,
        key: CertKey | None = None,
        trusts: str | None = None,
        auto_accept: bool = False,
    ) -> ShipLink:
        """A station linked to ``hems``; it trusts the manager's SKI (or ``trusts``), or auto-accepts."""
        trust = PeerTrust(auto_accept=auto_accept)
        if not auto_accept:
            trust = register(trust, trusts or hems.ski, at=self.clock.utcnow(), device_id="HEMS-0001")
        assert hems.address is not None
        config = ShipLinkConfig(
            name,
            "127.0.0.1" if self.tcp else name,
            "hems",
            "127.0.0.1" if self.tcp else HEMS_HOST,
            key or issue_self_signed(name, now=TEST_NOW),
            trust,
            manager_port=hems.address[1],
            retry_s=10.0,
        )
        link = ShipLink(config, self.net, self.clock, self.recorder)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await link.run(task_status=task_status)

        await self.nursery.start(run)
        self.links[name] = (link, scope)
        return link

    def events(self, kind: str, node: str | None = None) -> list[dict[str, object]]:
        return [e.data for e in self.recorder.events if e.kind == kind and (node is None or e.node == node)]

    def kinds(self, node: str) -> list[str]:
        return [e.kind for e in self.recorder.events if e.node == node]

    async def connected(self, link: ShipLink) -> None:
        await self.watch.until(lambda: link.connected)

    async def count(self, kind: str, n: int, node: str | None = None) -> None:
        await self.watch.until(lambda: len(self.events(kind, node)) >= n)


@pytest.fixture
async def env(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Env]:
    clock = SimClock.start(TEST_NOW)
    watch = Watch()
    async with trio.open_nursery() as nursery:
        yield Env(clock, Recorder(clock, echo=False, sink=watch), watch, VirtualNetwork(), nursery)
        nursery.cancel_scope.cancel()


async def test_unknown_station_waits_for_the_pairing_window(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems()
    with trio.fail_after(600):
        link = await env.station("ST-1", hems)
        await env.count("pairing_requested", 1, "hems")
        assert hems.statistics().pending == 1
        await env.count("ship_connect_failed", 1, "ST-1")
        failed = env.events("ship_connect_failed", "ST-1")
        # TLS 1.3: the client finished first and hears the manager's alert when it reads
        assert failed and failed[0]["reason"] == "remote:tls:peer_alert:internal_error"
        await trio.sleep(25)  # it keeps asking, backing off (10 s, then 20 s)
        assert hems.statistics().paired == 0 and not link.connected
        hems.open_pairing_window()
        await env.connected(link)
        await env.count("ship_connected", 1, "hems")
    paired = env.events("paired", "hems")
    assert len(paired) == 1 and paired[0]["ski"] == link.ski and paired[0]["device"] == "ST-1"
    assert env.events("ship_connected", "hems")[0]["ship_id"] == "ST-1"
    stats = hems.statistics()
    assert (stats.paired, stats.pending, stats.connected, stats.accepted) == (1, 0, 1, 1)
    assert env.events("ship_connected", "ST-1") == [{"manager": "hems", "ship_id": "hems"}]


async def test_auto_accept_pairs_every_new_station(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(60):
        links = [await env.station(f"ST-{i}", hems) for i in range(1, 4)]
        for link in links:
            await env.connected(link)
    assert hems.statistics().paired == 3
    assert "auto_accept" in str(env.events("paired", "hems")[0]["detail"])


async def test_user_confirmation_holds_the_hello_pending_with_prolongation(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    """A newly paired device waits for the user's confirmation (``confirm_s``): the manager's hello is
    ``pending``, it asks the station for more time 30 s before the station's 60 s wait ends, the station
    grants it, and the set-up completes once confirmed. A device paired earlier is not asked again."""
    hems = await env.hems(confirm_s=45.0, auto_accept=True)
    with trio.fail_after(600):
        link = await env.station("ST-1", hems)
        start = trio.current_time()
        await env.connected(link)
        assert trio.current_time() - start == pytest.approx(45.0)
    steps = [e["step"] for e in env.events("ship_hello", "hems")]
    assert steps == ["awaiting_confirmation", "peer_ready", "prolongation_requested", "confirmed"]
    assert [e["step"] for e in env.events("ship_hello", "ST-1")] == ["peer_pending", "prolongation_granted"]
    with trio.fail_after(600):
        link.rotate_key()  # a known device with a new key: refused until a window, then confirmed again
        await env.count("pairing_refused", 1, "hems")
        hems.open_pairing_window()
        await env.count("ship_connected", 2, "hems")
    assert [e["step"] for e in env.events("ship_hello", "hems")].count("confirmed") == 2


async def test_registered_ski_connects_without_a_window(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems()
    key = issue_self_signed("ST-1", now=TEST_NOW)
    hems.register(ski(key.cert).hex(), device_id="ST-1")
    with trio.fail_after(60):
        link = await env.station("ST-1", hems, key=key)
        await env.connected(link)
    assert [str(e["detail"]) for e in env.events("paired", "hems")] == [
        "registered by the operator",
        "registered SKI connected",
    ]
    assert env.events("pairing_requested") == []


async def test_rekeyed_station_needs_a_window_to_re_pair(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(600):
        link = await env.station("ST-1", hems)
        await env.connected(link)
        old = link.ski
        new = link.rotate_key()
        assert new != old
        # a known device id with a new key: refused even with auto_accept (a clone must not slip in)
        await env.count("pairing_refused", 1, "hems")
        refused = env.events("pairing_refused", "hems")[0]
        assert refused["reason"] == "pairing_refused:unknown" and refused["ski"] == new
        assert "re-pairing needs a pairing window" in str(refused["detail"])
        closed = env.events("ship_closed", "ST-1")[0]
        assert closed["reason"] == "closed" and closed["by"] == "local"
        hems.open_pairing_window()
        await env.count("paired", 2, "hems")
        await env.connected(link)
    repaired = env.events("paired", "hems")[1]
    assert repaired["ski"] == new and old in str(repaired["detail"])
    assert hems.device_ski("ST-1") == new
    assert env.events("ship_key_rotated", "ST-1") == [{"manager": "hems", "old_ski": old, "ski": new}]


async def test_unpaired_station_is_disconnected_and_refused(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(600):
        link = await env.station("ST-1", hems)
        await env.connected(link)
        hems.unpair(link.ski)
        await env.count("ship_closed", 1, "hems")
        assert env.events("ship_closed", "hems")[0]["reason"] == "trust_denied"
        assert env.events("unpaired", "hems")[0]["ski"] == link.ski
        await env.count("pairing_refused", 1, "hems")
        hems.open_pairing_window()  # unpaired stays refused, window or not
        await trio.sleep(60)
    reasons = {e["reason"] for e in env.events("pairing_refused", "hems")}
    assert reasons == {"pairing_refused:denied"} and not link.connected
    assert hems.statistics().denied == 1


async def test_impostor_with_another_key_is_refused_with_reason_and_event(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(600):
        real = await env.station("ST-4", hems)
        await env.connected(real)
        # another device claims ST-4's device id with its own key
        impostor = await env.station("rogue", hems, key=issue_self_signed("ST-4", now=TEST_NOW))
        await env.count("pairing_refused", 1, "hems")
        await trio.sleep(30)
    refused = env.events("pairing_refused", "hems")
    assert {e["reason"] for e in refused} == {"pairing_refused:unknown"}
    assert all(e["ski"] == impostor.ski and e["device"] == "ST-4" for e in refused)
    assert real.connected and not impostor.connected
    assert hems.device_ski("ST-4") == real.ski
    assert env.events("ship_connect_failed", "rogue")


async def test_station_refuses_a_manager_it_did_not_register(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems(auto_accept=True)
    other = issue_self_signed("HEMS-9999", now=TEST_NOW)
    with trio.fail_after(60):
        link = await env.station("ST-1", hems, trusts=ski(other.cert).hex())
        await env.count("ship_connect_failed", 1, "ST-1")
    # the registered entry names the device HEMS-0001 with another SKI: this one is a new key of it
    refused = env.events("ship_connect_failed", "ST-1")[0]
    assert refused["reason"] == "tls:pairing_refused:unknown"
    assert env.events("pairing_refused", "ST-1")[0]["ski"] == hems.ski
    assert not link.connected and hems.statistics().accepted == 0


# ---------------------------------------------------------------- hostile peers


async def _raw_ship_client(
    env: Env, hems: EnergyManager, subprotocols: tuple[str, ...] = ("ship",)
) -> WebSocket:
    key = issue_self_signed("PV-7", now=TEST_NOW)
    policy = PeerPolicy(side="client", pairing=PeerTrust(auto_accept=True))
    tls_conf = ClientTls.build(ship_profile(), SHIP_TRUST, Identity.from_cert_key(key), peer=policy)
    assert hems.address is not None
    transport = await env.net.connect(HEMS_HOST, hems.address[1], source="pv")
    tls = await tls_connect(transport, tls_conf, HEMS_HOST, verify_time=env.clock.utcnow)
    return await ws_client(tls, host=HEMS_HOST, path=SHIP_PATH, subprotocols=subprotocols, compression=False)


async def test_websocket_without_ship_subprotocol_is_refused(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(60):
        with pytest.raises(UpgradeRejected) as info:
            await _raw_ship_client(env, hems, ("ocpp2.0.1",))
        assert info.value.status == 400
        await env.count("ship_refused", 1, "hems")
    assert env.events("ship_refused", "hems")[0]["reason"] == "no_ship_subprotocol"


@pytest.mark.parametrize(
    ("send", "reason", "state"),
    [
        ([b"\x05garbage"], "bad_cmi", "cmi"),
        ([CMI, b'\x01{"connectionHello":[{"phase":"maybe"}]}'], "bad_message", "hello"),
        ([CMI, b"\x01" + b"x" * 5000], "message_too_large", "hello"),
        ([CMI, b'\x02{"data":[{"header":[{"protocolId":"ee1.0"}]}]}'], "unexpected_message", "hello"),
        ([], "cmi_timeout", "cmi"),
        ([CMI], "hello_timeout", "hello"),
    ],
)
async def test_hostile_ship_peers_end_with_a_reason(
    autojump_clock: trio.testing.MockClock, env: Env, send: list[bytes], reason: str, state: str
) -> None:
    hems = await env.hems(auto_accept=True)
    with trio.fail_after(600):
        ws = await _raw_ship_client(env, hems)
        for data in send:
            await ws.send_bytes(data)
        await env.count("ship_closed", 1, "hems")
        await ws.aclose()
    closed = env.events("ship_closed", "hems")[0]
    assert (closed["reason"], closed["state"], closed["by"]) == (reason, state, "local")
    assert hems.statistics().closed == {reason: 1}


# ---------------------------------------------------------------- loopback


async def test_loopback_pairing() -> None:
    """Real sockets: a station pairs with an auto-accepting energy manager over loopback TCP."""
    clock = SimClock.start(TEST_NOW)
    watch = Watch()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            env = Env(clock, Recorder(clock, echo=False, sink=watch), watch, TcpNetwork(), nursery)
            hems = EnergyManager(
                EnergyManagerConfig(
                    "hems", "127.0.0.1", HEMS_KEY, port=0, pairing=PeerTrust(auto_accept=True)
                ),
                env.net,
                clock,
                env.recorder,
            )
            await nursery.start(hems.run)
            link = await env.station("ST-1", hems)
            await env.connected(link)
            await env.count("ship_connected", 1, "hems")
            nursery.cancel_scope.cancel()
    assert env.events("paired", "hems")[0]["ski"] == link.ski


# ---------------------------------------------------------------- a controller's pairing listener


async def test_controller_listener_pairs_self_signed_stations(autojump_clock: trio.testing.MockClock) -> None:
    """``client_auth = "pairing"`` on a controller (profile 3): stations with self-signed certificates (CN =
    their id) are refused until a pairing window opens, then admitted; a CA-issued certificate is refused."""
    with trio.fail_after(3600):
        async with open_world() as world:
            main = await world.start_csms("main", heartbeat_interval=60)
            lc = await world.start_controller(
                "site", upstream=[main], security_profile=3, pairing=PeerTrust(pairing_window_s=300)
            )

            def self_signed(sid: str) -> Identity:
                return Identity.from_cert_key(issue_self_signed(sid, now=world.clock.utcnow()))

            fleet = await world.start_stations(
                2, routes=[Route(to="site")], sessions=0, tls=Tls(identity=self_signed), name="paired"
            )
            ca_issued = await world.start_stations(1, routes=[Route(to="site")], sessions=0, name="ca")
            await trio.sleep(20)
            kinds = [(e.node, e.kind) for e in world.recorder.events if e.node == "site"]
            assert kinds.count(("site", "pairing_requested")) >= 2 and not lc.controller.stations
            await OpenPairingWindow(target="site").apply(world)
            await trio.sleep(120)
            assert set(lc.controller.stations) == set(fleet.ids)
    site = [e for e in world.recorder.events if e.node == "site"]
    paired = [e.data for e in site if e.kind == "paired"]
    assert {str(d["device"]) for d in paired} == set(fleet.ids)
    assert any(e.kind == "pairing_window_opened" for e in site)
    refused = {str(e.data.get("reason")) for e in site if e.kind == "cert_invalid"}
    assert refused == {"cert_invalid:not_self_signed"} and ca_issued.ids[0] not in lc.controller.stations


async def test_world_energy_manager_operations(autojump_clock: trio.testing.MockClock) -> None:
    """The world's energy-manager API as the timeline actions use it, its errors, and the nodes' statistics."""
    with trio.fail_after(3600):
        async with open_world() as world:
            main = await world.start_csms("main")
            lc = await world.start_controller("site", upstream=[main])
            await world.start_stations(2, csms=main, sessions=0)
            hems = await world.start_energy_manager("hems", auto_accept=True, confirm=0.0)
            links = await world.link_energy_manager("fleet", "hems", trust="register", retry=10.0)
            await trio.sleep(5)
            assert all(link.connected for link in links)
            assert hems.statistics().paired == 2 and hems.statistics().connected == 2
            stats = links[0].statistics()
            assert (stats.connected, stats.attempts, stats.connections, stats.ski) == (
                True,
                1,
                1,
                links[0].ski,
            )
            impostor = await world.ship_impostor("hems", "fleet-0001", attempts=2)
            await trio.sleep(60)
            assert impostor.statistics().attempts == 2 and not impostor.connected  # it gave up after two
            world.rotate_ship_key("fleet-0002")
            await trio.sleep(5)
            assert links[1].statistics().rotations == 1 and not links[1].statistics().connected
            world.open_pairing_window("hems")
            await trio.sleep(15)
            assert links[1].statistics().connected
            world.close_pairing_window("hems")
            world.unpair("hems", "fleet-0001")
            await trio.sleep(1)
            assert not links[0].connected and hems.statistics().denied == 1
            with pytest.raises(ConfigError, match="no energy-manager link"):
                world.unpair("hems", "main")
            with pytest.raises(ConfigError, match="does not pair"):
                world.open_pairing_window(lc)
            with pytest.raises(ConfigError, match="no energy manager"):
                world.open_pairing_window("nobody")
    kinds = [e.kind for e in world.recorder.events if e.node == "hems"]
    assert kinds.count("pairing_refused") >= 3  # the impostor twice, the re-keyed station before the window
    assert "pairing_window_closed" in kinds and "unpaired" in kinds
