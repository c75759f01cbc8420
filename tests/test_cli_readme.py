"""Every shell command in README.md and scenarios/README.md works verbatim on a fresh clone.

The commands are taken from the ```sh blocks of both files, in order, and run one after the other with bash
in an empty directory that looks like a fresh clone (the repository's ``scenarios/``, ``Makefile``, setup files
and ``.venv``, linked; no ``certs/``, no ``runs/``). What is not run verbatim is in :data:`HANDLING`, with the
reason; a command the table does not name is run as written, so a command added to a README is checked
without touching this file.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READMES = ("README.md", "scenarios/README.md")
_BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)
_TOML = re.compile(r"```toml\n(.*?)```", re.S)

#: command (as written, comment removed) -> ("skip", reason) or ("rewrite", the command run instead, reason)
HANDLING: dict[str, tuple[str, str, str]] = {
    "make test": ("skip", "", "runs the whole suite, which contains this test"),
    "make test-fast": ("skip", "", "runs most of the suite, which contains this test"),
    "make demo": (
        "rewrite",
        "make -o .venv/.installed demo",
        "the venv is linked from the repository and already installed (-o: do not reinstall it)",
    ),
    ".venv/bin/evsim csms --listen 127.0.0.1:8443 --pki certs &": (
        "rewrite",
        ".venv/bin/evsim csms --listen 127.0.0.1:{port} --pki certs --duration 120 &",
        "a server: bounded in time, on a free port (8443 may be taken on a shared machine)",
    ),
    ".venv/bin/evsim stations --csms wss://localhost:8443/ocpp --stations 10 --ca certs/ca.crt": (
        "rewrite",
        "sleep 0.1; until grep -q listening csms.out 2>/dev/null; do sleep 0.1; done; "
        ".venv/bin/evsim stations --csms wss://localhost:{port}/ocpp --stations 10 --ca certs/ca.crt",
        "the CSMS above on its free port, once it listens",
    ),
    ".venv/bin/evsim report runs/<dir>": (
        "rewrite",
        '.venv/bin/evsim report "$(ls -d runs/*/ | tail -n 1)"',
        "<dir> is a placeholder: the run directory the previous command wrote",
    ),
    ".venv/bin/evsim explain runs/<dir> --depth 1": (
        "rewrite",
        '.venv/bin/evsim explain "$(ls -d runs/*/ | tail -n 1)" --depth 1',
        "<dir> is a placeholder: the run directory written before",
    ),
}


def readme_commands() -> list[tuple[str, str]]:
    """(README, command) for every line of every ```sh block, in file order, comments removed."""
    out = []
    for name in READMES:
        text = (REPO / name).read_text()
        for block in _BLOCK.findall(text):
            for line in block.splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    out.append((name, command))
    return out


def _fresh_clone(tmp: Path) -> Path:
    clone = tmp / "evsim"
    clone.mkdir()
    for name in ("scenarios", "evsim", ".venv"):
        (clone / name).symlink_to(REPO / name)
    for name in ("Makefile", "setup.cfg", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    (clone / "certs").mkdir()
    shutil.copy(REPO / "certs" / "README.md", clone / "certs" / "README.md")
    # the README's minimal scenario is what its `evsim validate my.toml` / `run my.toml` lines use
    minimal = next(t for t in _TOML.findall((REPO / "README.md").read_text()) if "[simulation]" in t)
    (clone / "my.toml").write_text(minimal)
    return clone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readmes_have_commands_and_the_handling_table_is_current() -> None:
    commands = [c for _, c in readme_commands()]
    assert ".venv/bin/evsim run scenarios/default.toml" in commands
    assert not [c for c in commands if c.startswith("evsim ")], "use .venv/bin/evsim (evsim is not on PATH)"
    stale = set(HANDLING) - set(commands)
    assert not stale, f"HANDLING names commands no README has any more: {stale}"


@pytest.mark.slow
@pytest.mark.loopback
def test_every_readme_command_works_on_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("bash") is None:
        pytest.skip("needs make and bash")
    clone = _fresh_clone(tmp_path)
    port = _free_port()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for readme, command in readme_commands():
            kind, replacement, _reason = HANDLING.get(command, ("run", command, ""))
            if kind == "skip":
                continue
            run = replacement.format(port=port)
            if run.endswith("&"):  # a server: started here, stopped at the end
                with (clone / "csms.out").open("wb") as out:
                    servers.append(
                        subprocess.Popen(["bash", "-c", f"exec {run[:-1].strip()}"], cwd=clone, stdout=out)
                    )
                continue
            result = subprocess.run(
                ["bash", "-c", run], cwd=clone, capture_output=True, text=True, timeout=180, check=False
            )
            assert result.returncode == 0, (readme, command, result.stdout[-2000:], result.stderr[-2000:])
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    assert (clone / "certs" / "ca.crt").is_file()
    assert len(list((clone / "runs").iterdir())) == 3  # make demo, run my.toml, run scenarios/default.toml
