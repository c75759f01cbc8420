"""``evsim explain handshake``: each canned case names the right step, alert and knob (real handshakes, in
memory, virtual time), the message trace, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.explain.handshake import Explanation, Step, explain, run, setup
from evsim.explain.handshake_cli import parse_keys
from evsim.tls.trace import CONTENT_ALERT, CONTENT_HANDSHAKE


def steps(story: Explanation, topic: str | None = None, connection: int = 1) -> list[Step]:
    return [s for s in story.steps if s.connection == connection and (topic is None or s.topic == topic)]


def texts(story: Explanation, topic: str | None = None, connection: int = 1) -> str:
    return "\n".join(s.text for s in steps(story, topic, connection))


def failed_knobs(story: Explanation) -> set[str | None]:
    return {s.knob for s in story.steps if s.ok is False}


def test_ok_tells_offers_choices_checks_and_the_ticket() -> None:
    story = explain(setup("ok"))
    offer = texts(story, "offer")
    assert "ClientHello: versions [1.3, 1.2], SNI csms.evsim.test" in offer
    assert "TLS_AES_128_GCM_SHA256" in offer and "key share sent for" in offer
    choice = steps(story, "choice")
    assert choice[0].text.startswith("server -> ServerHello: TLS 1.3, TLS_AES_256_GCM_SHA384")
    assert choice[0].knob == "server.versions" and "newest version both enable" in choice[0].why
    assert any(s.knob == "server.suite_preference" and "suite_preference = 'server'" in s.why for s in choice)
    verify = {s.text.split(":")[0]: s.ok for s in steps(story, "verify")}
    assert verify == {
        "chain building": True,
        "validity": True,
        "hostname": True,
        "pins": None,
        "revocation": None,
    }
    assert "NewSessionTicket" in texts(story, "ticket") and "lifetime 7200 s" in texts(story, "ticket")
    assert "connected: TLSv1.3" in texts(story, "result") and "full handshake" in texts(story, "result")
    assert story.predicted == "TLS 1.3, TLS_AES_256_GCM_SHA384"
    assert not failed_knobs(story)


def test_downgrade_names_the_version_range_and_protocol_version() -> None:
    story = explain(setup("downgrade"))
    refusal = texts(story, "refusal")
    assert "server -> alert protocol_version (fatal)" in refusal
    assert "the handshake stopped after ClientHello" in refusal
    assert "server stops: downgrade_refused" in refusal
    assert failed_knobs(story) == {None, "server.versions"}
    why = next(s.why for s in steps(story, "refusal") if s.knob == "server.versions")
    assert "client versions = ['1.2'], server versions = ['1.3']" in why
    assert not steps(story, "choice")  # no ServerHello


def test_unknown_ca_stops_at_chain_building() -> None:
    story = explain(setup("unknown-ca"))
    failed = [s for s in steps(story, "verify") if s.ok is False]
    assert [s.text.split(":")[0] for s in failed] == ["chain building"]
    assert failed[0].knob == "client.trust.roots" and "'operator'" in failed[0].why
    assert [s.text for s in steps(story, "verify")][1:] == [
        "validity: not reached",
        "hostname: not reached",
        "pins: not reached",
        "revocation: not reached",
    ]
    refusal = texts(story, "refusal")
    assert "client -> alert unknown_ca (fatal)" in refusal
    assert (
        "the handshake stopped after Certificate" in refusal or "stopped after CertificateVerify" in refusal
    )
    assert "client stops: cert_invalid:unknown_ca" in refusal


def test_expired_names_the_verifiers_clock() -> None:
    story = explain(setup("expired"))
    failed = [s for s in steps(story, "verify") if s.ok is False]
    assert failed[0].text.startswith(
        "validity: csms.evsim.test expired at the verifier's clock 2030-06-01 12:00:00"
    )
    assert failed[0].knob == "client.trust.time_check"
    assert "client -> alert certificate_expired (fatal)" in texts(story, "refusal")


def test_pin_mismatch_names_the_pins() -> None:
    story = explain(setup("pin-mismatch"))
    failed = [s for s in steps(story, "verify") if s.ok is False]
    assert failed[0].text.startswith("pins: leaf key") and failed[0].knob == "client.pins"
    assert "client stops: pin_mismatch (its own check)" in texts(story, "refusal")
    assert "alert internal_error" in texts(story, "refusal")  # a Python callback cannot set an X509 error


def test_resumption_shows_the_ticket_and_the_resumed_connection() -> None:
    story = explain(setup("resumption"))
    assert "NewSessionTicket" in texts(story, "ticket", 1)
    second = texts(story, None, 2)
    assert "client offers to resume: a TLS 1.3 pre-shared key" in second
    assert "server accepts the pre-shared key" in second
    assert "resumed" in texts(story, "result", 2) and "full handshake" in texts(story, "result", 1)
    assert not steps(story, "certificate", 2)  # a resumed handshake sends no certificate


def test_tls12_resumption_by_ticket() -> None:
    keys = {"versions": ["1.2"]}
    story = explain(setup("resumption", server_keys=keys))
    assert "a TLS 1.2 session ticket" in texts(story, "resumption", 2)
    assert "server accepts the session ticket" in texts(story, "resumption", 2)
    assert "resumed" in texts(story, "result", 2)


def test_profile_keys_change_the_choice_and_name_the_knob() -> None:
    server = {"cipher_suites": {"1.3": ["TLS_AES_128_GCM_SHA256"]}, "alpn": ["ocpp2.0.1"]}
    story = explain(
        setup("ok", server_keys=server, client_keys={"alpn": ["ocpp2.0.1"], "groups": ["secp256r1"]})
    )
    choice = texts(story, "choice")
    assert "TLS_AES_128_GCM_SHA256" in choice and "ALPN ocpp2.0.1" in choice
    assert "key exchange group secp256r1" in choice
    assert "client groups = [secp256r1]" in "\n".join(s.why for s in steps(story, "offer"))


def test_the_trace_holds_the_real_messages_and_stops_after_the_block() -> None:
    s = setup("ok")
    (conn,) = run(s)
    client_sent = [
        m.data[0]
        for m in conn.messages
        if m.side == "client" and m.sent and m.content_type == CONTENT_HANDSHAKE
    ]
    server_sent = [
        m.data[0]
        for m in conn.messages
        if m.side == "server" and m.sent and m.content_type == CONTENT_HANDSHAKE
    ]
    assert client_sent[0] == 1 and client_sent[-1] == 20  # ClientHello ... Finished
    assert server_sent[:5] == [2, 8, 11, 15, 20]  # TLS 1.3: SH, EE, Certificate, CertificateVerify, Finished
    assert not [m for m in conn.messages if m.content_type == CONTENT_ALERT and m.data[1] != 0]
    (again,) = run(s)  # a new trace per connection: nothing from the first leaks in
    assert len(again.messages) == len(conn.messages)


def test_depth_levels() -> None:
    story = explain(setup("ok"))
    one, two, three = (story.render(d) for d in (1, 2, 3))
    assert len(one.splitlines()) < len(two.splitlines()) < len(three.splitlines())
    assert "why:" not in one and "why:" in two
    assert "client -> server  ClientHello" in three and "client <- server  ServerHello" in three


def test_cli_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "handshake", "--case", "downgrade", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "alert protocol_version" in out and "knob: server.versions" in out
    assert (
        main(["explain", "handshake", "--case", "ok", "--server", 'versions=["1.2"]', "--resume", "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["case"] == "ok" and doc["predicted"].startswith("TLS 1.2") and doc["title"]
    assert any(s["connection"] == 2 and "resumed" in s["text"] for s in doc["steps"])


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "handshake", "--server", "versions=[1.9]"]) == 2  # not a version
    assert "configuration error" in capsys.readouterr().err
    assert main(["explain", "handshake", "--client", "versions"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["explain", "no/such/run"]) in (1, 2)


def test_keys_are_toml_values_with_dotted_names() -> None:
    assert parse_keys(['session.resumption="off"', 'versions=["1.3"]'], who="client") == {
        "session": {"resumption": "off"},
        "versions": ["1.3"],
    }
    with pytest.raises(ConfigError):
        parse_keys(["versions=1.3.4"], who="client")


def test_cli_profile_files_take_scenario_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = tmp_path / "server.toml"
    server.write_text('versions = ["1.3"]\ncipher_suites = { "1.3" = ["TLS_CHACHA20_POLY1305_SHA256"] }\n')
    assert main(["explain", "handshake", "--server-profile", str(server), "--depth", "1"]) == 0
    assert "TLS 1.3, TLS_CHACHA20_POLY1305_SHA256" in capsys.readouterr().out
    server.write_text("handshake_timeout_s = 5\n")  # the engine's key, not the scenario's
    assert main(["explain", "handshake", "--server-profile", str(server)]) == 2


def test_peers_from_a_scenario_file() -> None:
    from evsim.explain.handshake_scenario import scenario_setup

    scenarios = Path(__file__).resolve().parent.parent / "scenarios"
    attack = explain(scenario_setup(str(scenarios / "tls_downgrade_attack.toml"), "attacker", "main"))
    assert "attack_downgrade client offering ['1.2'] -> CSMS main" in attack.setup.title
    assert "server -> alert protocol_version (fatal)" in texts(attack, "refusal")
    assert "server.versions" in failed_knobs(attack)
    honest = explain(scenario_setup(str(scenarios / "tls_downgrade_attack.toml"), "honest", "main"))
    assert "connected: TLSv1.3" in texts(honest, "result")
    impostor = explain(scenario_setup(str(scenarios / "wrong_ca_mitm.toml"), "fleet", "impostor"))
    chain = next(s for s in steps(impostor, "verify") if s.text.startswith("chain building"))
    assert chain.ok is False and chain.knob == "client.trust.roots"
    with pytest.raises(ConfigError, match="no such client"):
        scenario_setup(str(scenarios / "wrong_ca_mitm.toml"), "nobody", "main")


def test_cli_scenario_form(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = str(Path(__file__).resolve().parent.parent / "scenarios" / "tls_downgrade_attack.toml")
    assert (
        main(["explain", "handshake", scenario, "--client", "attacker", "--server", "main", "--depth", "1"])
        == 0
    )
    assert "alert protocol_version" in capsys.readouterr().out
    assert main(["explain", "handshake", scenario, "--client", "attacker"]) == 2


@pytest.mark.parametrize("case", ["ok", "downgrade", "unknown-ca", "expired", "pin-mismatch", "resumption"])
def test_the_model_agrees_with_the_engine_on_every_case(case: str) -> None:
    story = explain(setup(case))
    (check,) = steps(story, "check")
    assert check.ok is True and story.predicted in check.text


def test_a_rule_the_model_lacks_shows_as_a_disagreement() -> None:
    story = explain(setup("ok", client_keys={"groups": ["X25519"]}, server_keys={"groups": ["secp384r1"]}))
    (check,) = steps(story, "check")
    assert check.ok is False and check.depth == 1
    assert "refused by the server: group_refused" in check.text
    client = next(s for s in steps(story, "refusal") if s.text.startswith("client stops"))
    assert (
        client.knob == "server.groups"
    )  # the client only hears handshake_failure; the server's knob decided
