"""The one TOML table reader (evsim.toml_table): shared by the TLS model and the scenario loader."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from evsim.errors import ConfigError
from evsim.tls.change import ChangePolicy
from evsim.tls.pairing import PeerTrust
from evsim.tls.peer import PeerPolicy
from evsim.tls.pins import PinSet
from evsim.toml_table import Table, choices_fix, did_you_mean, format_path, join_path, rebased

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_base_layer_imports_neither_trio_nor_openssl() -> None:
    code = (
        "import sys, evsim.toml_table; "
        "bad = [m for m in ('trio', 'OpenSSL', 'cryptography') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_one_did_you_mean_in_the_package() -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "evsim").rglob("*.py")
        if "get_close_matches" in p.read_text("utf-8")
    )
    assert users == ["evsim/toml_table.py"]


def test_suggestions() -> None:
    assert did_you_mean("versons", ["versions", "groups"]) == "versions"
    assert did_you_mean("zzz", ["versions"]) is None
    assert did_you_mean(3, ["versions"]) is None
    assert (
        choices_fix("servr", ("server", "client")) == "did you mean 'server'? use one of 'server', 'client'"
    )
    assert choices_fix("x", ()) == "use one of (none defined)"


def test_paths() -> None:
    assert (
        format_path(("tls", "profiles", "p", "cipher_suites", "1.3", 0))
        == 'tls.profiles.p.cipher_suites."1.3"[0]'
    )
    assert join_path("a.b", "c") == "a.b.c" and join_path("a", "[0]") == "a[0]" and join_path("", "c") == "c"
    moved = rebased(ConfigError("bad", path="session.lifetime_s", file="f", line=3), "tls.p", {"session": ""})
    assert (moved.path, moved.file, moved.line) == ("tls.p.lifetime_s", "f", 3)


def test_reader_errors_name_the_field() -> None:
    t = Table(
        {"port": "443", "names": ["a", 1], "mode": "fast", "sub": {"kye": 1}},
        "listener.main",
        ("port", "names", "mode", "sub"),
    )
    with pytest.raises(ConfigError, match="expected an integer, got a string") as err:
        t.integer("port", 443)
    assert err.value.path == "listener.main.port"
    with pytest.raises(ConfigError, match="expected a string, got an integer") as err:
        t.string_list("names", ())
    assert err.value.path == "listener.main.names[1]"
    with pytest.raises(ConfigError, match="did you mean 'fast_open'") as err:
        t.enum("mode", ("fast_open", "slow"), "slow")
    with pytest.raises(ConfigError, match="did you mean 'key'") as err:
        t.table("sub", ("key",))
    assert err.value.path == "listener.main.sub.kye"
    with pytest.raises(ConfigError, match="expected a table, got an integer"):
        Table(3, "x", ())


@pytest.mark.parametrize(
    ("build", "path", "guess"),
    [
        (lambda: PinSet.from_toml({"enforcment": "enforce"}, path="p"), "p.enforcment", "enforcement"),
        (
            lambda: PinSet.from_toml({"pins": [{"target": "leaf", "spki_sha265": "00"}]}, path="p"),
            "p.pins[0].spki_sha265",
            "spki_sha256",
        ),
        (
            lambda: ChangePolicy.from_toml({"on_peer_key_chang": "warn"}, path="c"),
            "c.on_peer_key_chang",
            None,
        ),
        (lambda: PeerTrust.from_toml({"auto_acept": True}, path="t", at=None), "t.auto_acept", "auto_accept"),  # type: ignore[arg-type]
        (
            lambda: PeerPolicy.from_toml({"pairng": {}}, path="e", side="client", at=None, sink=None),  # type: ignore[arg-type]
            "e.pairng",
            "pairing",
        ),
    ],
)
def test_every_tls_table_suggests_the_key_meant(build: object, path: str, guess: str | None) -> None:
    with pytest.raises(ConfigError, match="unknown key") as err:
        build()  # type: ignore[operator]
    assert err.value.path == path
    if guess is not None:
        assert f"did you mean {guess!r}" in err.value.fix
    else:
        assert err.value.fix.startswith("did you mean")
