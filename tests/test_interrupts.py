"""Ctrl-C never changes results: interrupts in OpenSSL callbacks, clean stops, exit statuses, closed pipes.

In-process tests simulate a Ctrl-C by raising ``KeyboardInterrupt`` (or SIGINT itself) from inside a verify
callback; the end-to-end tests send SIGINT to ``evsim`` subprocesses at moments chosen from their own output.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

from evsim import interrupts
from evsim.cli import main
from evsim.metrics.canonical import canonical_log
from evsim.tls import ClientTls, ServerTls, TlsProfile, TlsStream, context
from evsim.tls.verify import check_hostname_der
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

PKI = make_test_pki()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _pair() -> tuple[TlsStream, TlsStream]:
    profile = TlsProfile()
    a, b = trio.testing.memory_stream_pair()
    client = TlsStream.client(
        a, ClientTls.build(profile, PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(b, ServerTls.build(profile, PKI.server_identity()))
    return client, server


def _handshake(client: TlsStream, server: TlsStream, outcome: dict[str, BaseException | None]) -> Any:
    """The main function of a run that handshakes both sides and notes what the client's handshake did."""

    async def client_side() -> None:
        try:
            await client.do_handshake()
        except BaseException as exc:
            outcome["client"] = exc
            raise
        outcome["client"] = None

    async def server_side() -> None:
        with contextlib.suppress(Exception):
            await server.do_handshake()

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_side)
                nursery.start_soon(server_side)

    return main


def _run_to_end(main: Any) -> BaseException:
    """Run ``main`` in a trio run of its own; what ended it (the test fails if it returned)."""
    try:
        trio.run(main)
    except BaseException as exc:  # the test inspects whatever ended the run
        return exc
    raise AssertionError("the run was expected to end by an interrupt")


def _interrupting_hostname_check(monkeypatch: pytest.MonkeyPatch, interrupt: Callable[[], None]) -> list[int]:
    """Make the client's hostname check (run inside OpenSSL's verify callback) call ``interrupt`` first."""
    calls: list[int] = []
    original = check_hostname_der

    def check(der: bytes, host: str, mode: str, wildcards: str) -> str | None:
        calls.append(1)
        interrupt()
        return original(der, host, mode, wildcards)

    monkeypatch.setattr(context, "check_hostname_der", check)
    return calls


def test_interrupt_inside_verify_callback_is_raised_not_a_certificate_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KeyboardInterrupt raised inside the verify callback (as Python's own SIGINT handler would raise it)
    comes out of the handshake as KeyboardInterrupt: no ``cert_invalid`` failure, nothing "ignored"."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    calls = _interrupting_hostname_check(monkeypatch, interrupt)
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    client, server = _pair()
    outcome: dict[str, BaseException | None] = {}
    ended = _run_to_end(_handshake(client, server, outcome))
    assert calls, "the verify callback did not run"
    assert all(isinstance(e, KeyboardInterrupt) for e in _leaves(ended)), ended
    assert isinstance(outcome["client"], KeyboardInterrupt), outcome
    assert client._vstate.failure is None  # no certificate verdict recorded
    assert client._vstate.interrupt is None  # raised once, not kept
    assert unraisable == []  # not "Exception ignored from cffi callback"


def test_sigint_inside_verify_callback_waits_for_a_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real SIGINT under trio's own handler while OpenSSL runs the verify callback: trio defers it (the callback
    is KI-protected), so the handshake gets no invented verdict, and the run ends with KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    calls = _interrupting_hostname_check(monkeypatch, lambda: signal.raise_signal(signal.SIGINT))
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    client, server = _pair()
    outcome: dict[str, BaseException | None] = {}
    ended = _run_to_end(_handshake(client, server, outcome))
    assert calls
    assert all(isinstance(e, KeyboardInterrupt) for e in _leaves(ended)), ended
    client_outcome = outcome.get("client")  # done, or cancelled when the interrupt reached the main task
    assert client_outcome is None or isinstance(client_outcome, trio.Cancelled), client_outcome
    assert client._vstate.failure is None
    assert unraisable == []


# ---------------------------------------------------------------- the callback guard itself


class _Conn:
    def __init__(self, data: object) -> None:
        self.data = data

    def get_app_data(self) -> object:
        return self.data


def _kept(slot: interrupts.InterruptSlot) -> BaseException | None:
    return slot.interrupt


def test_c_callback_keeps_interrupts_and_passes_errors() -> None:
    @interrupts.c_callback(refuse=False)
    def callback(conn: _Conn, what: BaseException | None) -> bool:
        if what is not None:
            raise what
        return True

    slot = interrupts.InterruptSlot()
    conn = _Conn(slot)
    assert callback(conn, None) is True
    with pytest.raises(ValueError, match="bad"):  # pyOpenSSL raises an Exception from the engine call itself
        callback(conn, ValueError("bad"))
    assert _kept(slot) is None
    first, second = KeyboardInterrupt(), KeyboardInterrupt()
    assert callback(conn, first) is False  # refused, kept
    assert callback(conn, second) is False
    assert _kept(slot) is first  # the first one wins
    with pytest.raises(KeyboardInterrupt) as info:
        slot.raise_kept()
    assert info.value is first
    slot.raise_kept()  # once
    with pytest.raises(KeyboardInterrupt):  # nowhere to keep it: raised as before
        callback(_Conn(None), KeyboardInterrupt())
    assert callback.__name__ == "callback"


def test_c_callbacks_are_ki_protected() -> None:
    seen: list[bool] = []

    @interrupts.c_callback(refuse=None)
    def callback(conn: _Conn) -> None:
        del conn
        seen.append(trio.lowlevel.currently_ki_protected())

    async def main() -> None:
        callback(_Conn(None))
        seen.append(trio.lowlevel.currently_ki_protected())

    trio.run(main)
    assert seen == [True, False]


# ---------------------------------------------------------------- interrupts.run


def _sigint_soon(delay: float) -> Callable[[], Any]:
    async def fire() -> None:
        await trio.sleep(delay)
        signal.raise_signal(signal.SIGINT)

    return fire


def test_run_stops_cleanly_on_the_first_ctrl_c() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    log: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sigint_soon(5.0))
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                log.append(f"cancelled at {trio.current_time():g}")
                raise

    with pytest.raises(KeyboardInterrupt):
        interrupts.run(
            main, clock=trio.testing.MockClock(autojump_threshold=0), on_interrupt=lambda: log.append("stop")
        )
    assert log == ["stop", "cancelled at 5"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert interrupts.run(trio.sleep, 0) is None  # and a run that is not interrupted returns its value


def test_failures_while_an_interrupted_run_winds_down_are_not_its_result() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sigint_soon(1.0))
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                raise ConnectionError("the peer went away while we were torn down") from None

    with pytest.raises(KeyboardInterrupt) as info:
        interrupts.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert any(isinstance(e, ConnectionError) for e in _leaves(info.value.__cause__ or info.value))


# ---------------------------------------------------------------- evsim as a process

EVSIM = [sys.executable, "-m", "evsim"]
PROCESS_TIMEOUT_S = 60.0

SMALL_SCENARIO = """
[simulation]
description = "Eight stations, two short sessions each, links reset every 90 s"
seed = 3
duration = "12m"
stop_when_done = true

[csms.main]
heartbeat_interval = "60s"

[stations.fleet]
count = 8
id_pattern = "ST-{n:04d}"
csms = "main"
sessions = 2
session_duration = "3m"
session_start = ["10s", "60s"]
meter_interval = "30s"

[[links]]
between = ["fleet", "main"]
latency = "20ms"
reset = { every = "90s" }
"""
"""About 0.4 s of run (virtual time, in-memory network): TLS handshakes, resets and transactions all along,
and a plain progress line about every simulated minute."""

COMPLETE = "all stations done"


class Process:
    """A process whose output lines the test can wait for (every wait bounded)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the bound of every wait: a stuck process is killed, which ends any pending read
        self._watchdog = threading.Timer(PROCESS_TIMEOUT_S, self.proc.kill)
        self._watchdog.start()
        self.lines: list[str] = []

    def wait_for(self, stream: str, predicate: Callable[[str], bool]) -> str:
        """Read ``stream`` ("stdout" or "stderr") until a line matches; that line."""
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert pipe is not None
        for line in pipe:
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"the process ended without the expected line; read: {self.lines[-5:]}")

    def sigint(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit: (status, rest of stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=PROCESS_TIMEOUT_S)
        finally:
            self._watchdog.cancel()
        assert self.proc.returncode != -signal.SIGKILL, "the process did not end in time (killed)"
        return self.proc.returncode, out, err


def evsim(args: list[str], cwd: Path) -> Process:
    """``evsim ARGS`` as a :class:`Process`."""
    return Process([*EVSIM, *args], cwd)


def assert_quiet(err: str) -> None:
    """No traceback, nothing "ignored", no flood: at most a few lines of its own."""
    for bad in ("Traceback", "Exception ignored", "must be called from async context", "cffi callback"):
        assert bad not in err, err[-3000:]
    assert len(err.splitlines()) <= 4, err[-3000:]


@attrs.frozen
class RunFigures:
    outcome: str
    events: collections.Counter[str]  # canonical lines, without run_ended
    messages: dict[str, dict[str, int]]  # station -> OCPP action -> CALLs received
    dropped: dict[str, int]  # station -> TransactionEvents dropped from its queue


def figures(out_dir: Path) -> RunFigures:
    (run_dir,) = out_dir.iterdir()
    meta = json.loads((run_dir / "meta.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    ended = [e for e in lines if e["kind"] == "run_ended"]
    assert len(ended) == 1 and ended[0]["outcome"] == meta["outcome"], (ended, meta["outcome"])
    assert lines[-1]["kind"] == "run_ended"  # nothing recorded after the run ended
    return RunFigures(
        outcome=meta["outcome"],
        events=collections.Counter(canonical_log(e for e in lines if e["kind"] != "run_ended")),
        messages=meta["ocpp_messages"],
        dropped={sid: q["dropped_total"] for sid, q in meta["tx_queues"].items()},
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunFigures]:
    """The scenario file and the figures of its uninterrupted run."""
    d = tmp_path_factory.mktemp("small")
    (d / "small.toml").write_text(SMALL_SCENARIO)
    run = evsim(["run", "small.toml", "--out", "complete", "--no-plots"], d)
    status, _, err = run.finish()
    assert status == 0, err
    complete = figures(d / "complete")
    assert complete.outcome == COMPLETE
    return d / "small.toml", complete


def interrupted_run(scenario: Path, out: Path, *, after_line: int, delay_s: float) -> tuple[int, str]:
    """Run ``scenario`` and send SIGINT ``delay_s`` after its ``after_line``-th progress line."""
    run = evsim(["run", str(scenario), "--out", str(out), "--no-plots"], scenario.parent)
    seen = 0

    def progress(line: str) -> bool:
        nonlocal seen
        if line.startswith("[evsim run small]"):
            seen += 1
        return seen > after_line

    run.wait_for("stdout", progress)
    if delay_s:
        time.sleep(delay_s)  # the moment under test, measured from a line of the run's own output
    run.sigint()
    status, _, err = run.finish()
    assert_quiet(err)
    return status, err


def check_never_altered(run: RunFigures, complete: RunFigures, status: int) -> None:
    """Complete and equal, or marked interrupted with nothing the complete run does not have."""
    if run.outcome == COMPLETE:  # the signal came after the run ended (writing the report, or gone)
        assert status in (0, 130)
        assert run == complete
        return
    assert run.outcome == "interrupted"
    assert status == 130
    extra = run.events - complete.events
    assert not extra, f"the interrupted run has events the complete run does not: {sorted(extra)[:5]}"
    for sid, by_action in run.messages.items():
        for action, n in by_action.items():
            assert n <= complete.messages[sid].get(action, 0), (sid, action)
    for sid, n in run.dropped.items():
        assert n <= complete.dropped[sid], sid


@pytest.mark.slow
def test_ctrl_c_early_in_a_run_marks_it_interrupted(small: tuple[Path, RunFigures], tmp_path: Path) -> None:
    scenario, complete = small
    status, err = interrupted_run(scenario, tmp_path / "runs", after_line=0, delay_s=0.0)
    run = figures(tmp_path / "runs")
    assert run.outcome == "interrupted", err
    assert status == 130
    assert "interrupted" in err
    check_never_altered(run, complete, status)


@pytest.mark.slow
@settings(max_examples=min(settings().max_examples, 8), deadline=None)
@given(after_line=st.integers(0, 8), delay_ms=st.integers(0, 60))
def test_ctrl_c_at_any_moment_never_alters_a_run(
    small: tuple[Path, RunFigures], after_line: int, delay_ms: int
) -> None:
    scenario, complete = small
    with tempfile.TemporaryDirectory() as out:
        status, _ = interrupted_run(scenario, Path(out), after_line=after_line, delay_s=delay_ms / 1000)
        run = figures(Path(out))
        event(f"outcome: {run.outcome}")
        check_never_altered(run, complete, status)


@pytest.mark.slow
def test_closed_stdout_ends_quietly_and_the_run_completes(
    small: tuple[Path, RunFigures], tmp_path: Path
) -> None:
    scenario, complete = small
    run = evsim(["run", str(scenario), "--out", str(tmp_path / "runs"), "--no-plots"], tmp_path)
    run.wait_for("stdout", lambda line: line.startswith("[evsim run small]"))
    assert run.proc.stdout is not None
    run.proc.stdout.close()  # `evsim run ... | head -1`
    status = run.proc.wait(timeout=PROCESS_TIMEOUT_S)
    assert run.proc.stderr is not None
    err = run.proc.stderr.read()
    run.finish()
    assert_quiet(err)
    assert status == 141
    assert figures(tmp_path / "runs") == complete


SPIN = """
import sys, trio, trio.testing
from evsim import interrupts

async def main():
    with trio.CancelScope(shield=True):  # a run that never winds down: time jumps forever
        print("READY", flush=True)
        while True:
            await trio.sleep(1)

interrupts.run(main, clock=trio.testing.MockClock(autojump_threshold=0),
               on_interrupt=lambda: print("STOPPING", flush=True))
"""


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    spin = Process([sys.executable, "-c", SPIN], tmp_path)
    spin.wait_for("stdout", lambda line: line == "READY\n")
    spin.sigint()
    spin.wait_for("stdout", lambda line: line == "STOPPING\n")  # asked to stop; it does not
    spin.sigint()
    status, _, err = spin.finish()
    assert status == 130
    assert "interrupted again" in err
    assert_quiet(err)


# ---------------------------------------------------------------- the other commands


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", "--dir", str(d)]) == 0
    return d


EVENT_LINE = re.compile(r"^(INFO evsim: )?\d{4}-\d\d-\d\dT\S+ \[")


def without_events(err: str) -> str:
    """Standard error without the event lines ``-v`` asks for."""
    return "\n".join(line for line in err.splitlines() if not EVENT_LINE.match(line))


@pytest.mark.loopback
@pytest.mark.slow
@pytest.mark.parametrize("after_lines", [1, 12])
def test_ctrl_c_ends_csms_and_stations_quietly(pki_dir: Path, tmp_path: Path, after_lines: int) -> None:
    """Ctrl-C to ``evsim stations`` while stations connect and boot, then to ``evsim csms`` while stations are
    still connected: each exits 130 with one line, no traceback."""
    csms = evsim(["csms", "--listen", "127.0.0.1:0", "--pki", str(pki_dir)], tmp_path)
    listening = csms.wait_for("stdout", lambda line: "CSMS listening on " in line)
    port = listening.split("127.0.0.1:")[1].split("/")[0]
    args = ["stations", "--csms", f"wss://localhost:{port}/ocpp", "--ca", str(pki_dir / "ca.crt")]
    args += ["--count", "20", "--session-duration", "30", "--meter-interval", "1", "--duration", "50", "-v"]
    stations = evsim(args, tmp_path)
    for _ in range(after_lines):
        stations.wait_for("stderr", lambda line: " INFO " in line)
    watcher = evsim(
        [
            *args[:5],
            "--count",
            "2",
            "--id-prefix",
            "W-",
            "--session-duration",
            "30",
            "--duration",
            "50",
            "-v",
        ],
        tmp_path,
    )
    watcher.wait_for("stderr", lambda line: " booted " in line)  # connected while the CSMS is interrupted
    stations.sigint()
    status, _, err = stations.finish()
    assert status == 130
    assert err.rstrip().endswith("evsim: interrupted")
    assert_quiet(without_events(err))
    csms.sigint()
    status, _, err = csms.finish()
    assert status == 130
    assert err.rstrip().endswith("evsim: interrupted")
    assert_quiet(without_events(err))
    watcher.sigint()
    status, _, err = watcher.finish()
    assert status == 130
    assert_quiet(without_events(err))


@pytest.mark.slow
def test_ctrl_c_ends_the_demo_quietly(pki_dir: Path, tmp_path: Path) -> None:
    demo = evsim(["-v", "demo", "--pki", str(pki_dir), "--stations", "5", "--real-time"], tmp_path)
    demo.wait_for("stderr", lambda line: "booted" in line)
    demo.sigint()
    status, _, err = demo.finish()
    assert status == 130, err
    assert err.rstrip().endswith("evsim: interrupted")
    assert_quiet(without_events(err))


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("127.0.0.1:99999", "out of range"),
        ("[::1]:70000", "out of range"),
        ("10.1.2.3:8443", "not a loopback address"),
        ("0.0.0.0:8443", "not a loopback address"),
        ("csms.example:8443", "not a loopback address"),
    ],
)
def test_listen_out_of_range_or_not_loopback_is_a_usage_error(
    listen: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["csms", "--listen", listen, "--pki", "certs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert "--listen" in err
    assert "Traceback" not in err


@pytest.mark.loopback
def test_taken_port_is_one_line(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["csms", "--listen", f"127.0.0.1:{port}", "--pki", str(pki_dir), "--duration", "5"])
    assert status == 2
    err = capsys.readouterr().err
    assert "already in use" in err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("evsim:")] == [err.splitlines()[-1]]
