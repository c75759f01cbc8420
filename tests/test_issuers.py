"""Certificates in use by issuer over time, on a small world run: a renewal over OCPP and a root rollover.

Three stations at security profile 3 renew their client certificates (same issuer, so counted as renewed),
get the new CSMS root, and the CSMS moves its server certificate to it; a link reset at 5 min makes every
station reconnect. The table and the plot's series must show the move, and be what the events say.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from evsim.metrics import plots
from evsim.metrics.issuers import issuer_uses
from evsim.metrics.topology import node_roles
from tests.test_attribution import parse_tables, run_report, table

ROLLOVER = """
[simulation]
seed = 4
duration = "9m"
[pki.roots.next]
[csms.main]
security_profile = 3
heartbeat_interval = "60s"
[stations.fleet]
count = 3
id_pattern = "ST-{n}"
sessions = 0
retry_backoff = { wait_minimum = "5s", random_range = "5s", repeat_times = 2 }
[[links]]
between = ["fleet", "main"]
reset = { every = "5m" }
[[timeline]]
at = "1m"
action = "trigger_renewal"
target = "main"
[[timeline]]
at = "2m"
action = "install_certificate"
target = "main"
root = "next"
[[timeline]]
at = "3m"
action = "switch_server_certificate"
target = "main"
root = "next"
"""


def test_renewal_and_rollover_move_the_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "rollover", ROLLOVER, capsys)
    events = sorted(run.events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
    stations = {f"ST-{n}" for n in (1, 2, 3)}
    rows = {
        (r["certificate"], r["issuer"]): r
        for r in table(parse_tables((run.path / "summary.txt").read_text()), "Certificates in use")
    }
    # recomputed: handshakes per server issuer; the stations' renewals
    server = collections.Counter(
        str(e["server_issuer"]) for e in events if e["kind"] == "handshake_ok" and "server_issuer" in e
    )
    switched = [e for e in events if e["kind"] == "client_certificate_switched"]
    assert {e["node"] for e in switched} == stations
    old_root, new_root = "O=evsim,CN=evsim CSMS Root CA", "O=next,CN=next Root CA"
    assert set(server) == {old_root, new_root}
    for issuer, n in server.items():
        assert int(rows[("server", issuer)]["handshakes"]) == n
    # after the reset at 5 min every station uses the new root's server certificate, none the old one
    assert (rows[("server", old_root)]["in use at end"], rows[("server", new_root)]["in use at end"]) == (
        "0",
        "3",
    )
    assert float(rows[("server", new_root)]["first in use (s)"]) >= 300
    # client certificates: the renewed ones (same issuer) took over from the originals
    client = {issuer: r for (kind, issuer), r in rows.items() if kind == "client"}
    (renewed,) = [i for i in client if i.endswith("(renewed)")]
    (original,) = [i for i in client if not i.endswith("(renewed)")]
    assert renewed == f"{original} (renewed)"
    assert (client[original]["in use at end"], client[renewed]["in use at end"]) == ("0", "3")

    # the plot's series: a step function that ends where the table does
    uses = {u.label: u for u in issuer_uses(events, node_roles(events))}
    assert uses[f"server: {new_root}"].counts[-1] == 3 and uses[f"server: {old_root}"].counts[-1] == 0
    assert max(uses[f"server: {old_root}"].counts) == 3
    first_switch = min(float(e["t"]) for e in switched)
    assert uses[f"client: {renewed}"].times[0] == first_switch

    written = plots.render_plots(run)
    assert (run.path / "plots" / "certificates_by_issuer.png") in written
