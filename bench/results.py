"""The result file of a ``make bench`` run: the machine, the run, and every table each section printed.

Theory of operation: :class:`BenchRun` runs the sections one after another. Before the first it points
:data:`bench.common.RECORD_ENV` at a scratch file; :func:`bench.common.bench_table` and
:func:`bench.common.bench_problem` append a JSON line there from whichever process a section runs in (the
fleets, scale and failover runs are subprocesses that inherit the variable). After each section the new lines
are that section's tables and problems; its printed output is kept too (stdout is teed while it runs). A section
that raises is recorded as ``failed`` with the exception and the run goes on; one left out by ``BENCH_SKIP`` is
recorded as ``skipped``. :meth:`BenchRun.write` then writes one JSON document (:data:`FORMAT`) to
``bench/results/<run id>.json``, or to the path in ``BENCH_OUT``; ``python -m bench readme`` (``bench/readme.py``)
renders the README's tables from such files.

The machine is described by what can be read without privileges: the CPU model (``/proc/cpuinfo``), the cores
this process may use, the memory (``/proc/meminfo``), the load average at the start and end of the run and of
each section, the kernel, the Python, OpenSSL, pyOpenSSL, cryptography and trio versions, and the git commit the
tree was at (and whether it had uncommitted changes). ``BENCH_MACHINE`` adds a name of your choice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from bench.common import RECORD_ENV
from evsim.clock import real_utcnow

__all__ = ["FORMAT", "RESULTS_DIR", "SIZE_SETTINGS", "BenchRun", "machine", "size_overrides"]

FORMAT = "evsim-bench-result/1"
"""The ``format`` field of a result file."""

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
"""Where result files go unless ``BENCH_OUT`` names a path."""

SIZE_SETTINGS = (
    "BENCH_N",
    "BENCH_RTT_SECONDS",
    "BENCH_STORM_N",
    "BENCH_WORKERS_N",
    "BENCH_MEMORY_N",
    "BENCH_NTS_SECONDS",
    "BENCH_LADDER_ROUNDS",
    "BENCH_LADDER_SECONDS",
    "BENCH_TLS_HANDSHAKE_N",
    "BENCH_RENEWAL_VIRTUAL",
    "BENCH_RENEWAL_REAL",
)
"""Settings that change a run's sizes: a run that set any of them is not the README's by default."""


def size_overrides(settings: dict[str, str]) -> dict[str, str]:
    """The size settings a run set (``{}`` for a run with the documented default sizes)."""
    return {k: v for k, v in settings.items() if k in SIZE_SETTINGS}


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    return None


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (``[]`` where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _openssl() -> str:
    """The OpenSSL pyOpenSSL (evsim's TLS engine) links, e.g. ``OpenSSL 3.5.0 8 Apr 2025``."""
    from OpenSSL import SSL

    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    """The machine and software a run measured (see the module doc)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import ssl

    return {
        "name": os.environ.get("BENCH_MACHINE", ""),
        "cpu_model": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "openssl": _openssl(),
        "python_ssl": ssl.OPENSSL_VERSION,
        "pyopenssl": _version("pyOpenSSL"),
        "cryptography": _version("cryptography"),
        "trio": _version("trio"),
    }


def _git_state() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, s: str) -> int:
        self.copy.write(s)
        return self.out.write(s)

    def flush(self) -> None:
        self.out.flush()


def _now() -> str:
    return real_utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


class BenchRun:
    """One ``python -m bench`` run: runs sections, records them, writes the result file.

    Args:
        command: how the run was started (``"make bench"``, ``"python -m bench memory"``).
    """

    def __init__(self, command: str) -> None:
        started = real_utcnow()
        self.run_id = started.strftime("%Y%m%d-%H%M%S")
        self.document: dict[str, Any] = {
            "format": FORMAT,
            "run_id": self.run_id,
            "command": command,
            "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": None,
            "settings": {
                k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_") and k != RECORD_ENV
            },
            "machine": machine(),
            "load_start": load_average(),
            "load_end": None,
            "git": _git_state(),
            "sections": [],
        }
        fd, name = tempfile.mkstemp(prefix="evsim-bench-record-", suffix=".jsonl")
        os.close(fd)
        self._record = Path(name)
        self._previous = os.environ.get(RECORD_ENV)
        os.environ[RECORD_ENV] = name

    @property
    def sections(self) -> list[dict[str, Any]]:
        return self.document["sections"]  # type: ignore[no-any-return]

    def skip(self, name: str, reason: str) -> None:
        """Record a section that was left out."""
        self.sections.append(
            {"name": name, "status": "skipped", "reason": reason, "tables": [], "problems": []}
        )

    def section(self, name: str, run: Callable[[], object]) -> str:
        """Run one section, teeing its output, and record it; returns its status (``ok``, ``partial``: tables
        and problems, ``failed``: problems or an exception and no table). Ctrl-C records the section as
        ``interrupted`` and raises KeyboardInterrupt again."""
        offset = self._record.stat().st_size
        entry: dict[str, Any] = {"name": name, "started": _now(), "load_start": load_average()}
        wall0 = time.perf_counter()
        cpu0 = _cpu_with_children()
        tee = _Tee(sys.stdout)
        error = None
        interrupted = False
        with contextlib.redirect_stdout(tee):
            try:
                run()
            except Exception as exc:  # a section's bug must not lose the other sections' figures
                error = _describe(exc)
                traceback.print_exc()
                print(f"! section {name} failed: {error}")
            except BaseException as exc:
                # Ctrl-C (inside trio: in an exception group): recorded as interrupted, then the run stops
                # and bench_run still writes what it has
                if not isinstance(exc, KeyboardInterrupt) and not (
                    isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
                ):
                    raise
                interrupted = True
                error = "interrupted (Ctrl-C)"
        entry.update(self._finish(offset, wall0, cpu0, error, tee.copy.getvalue()))
        if interrupted:
            entry["status"] = "interrupted"
        self.sections.append(entry)
        if interrupted:
            raise KeyboardInterrupt
        return str(entry["status"])

    def _finish(
        self, offset: int, wall0: float, cpu0: float, error: str | None, output: str
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        entry["wall_s"] = round(time.perf_counter() - wall0, 1)
        entry["cpu_s"] = round(_cpu_with_children() - cpu0, 1)
        entry["load_end"] = load_average()
        tables: list[dict[str, Any]] = []
        problems: list[str] = []
        with self._record.open(encoding="utf-8") as fh:
            fh.seek(offset)
            for line in fh:
                item = json.loads(line)
                if item.pop("kind") == "table":
                    tables.append(item)
                else:
                    problems.append(str(item["message"]))
        if error:
            problems.append(error if error.startswith("interrupted") else f"section raised {error}")
        entry["status"] = "failed" if not tables and problems else "partial" if problems else "ok"
        entry["tables"] = tables
        entry["problems"] = problems
        if error:
            entry["error"] = error
        entry["output"] = output
        return entry

    def failed(self) -> list[str]:
        """Names of the sections that failed."""
        return [s["name"] for s in self.sections if s["status"] == "failed"]

    def write(self) -> Path:
        """Write the result file (``BENCH_OUT`` or ``bench/results/<run id>.json``); returns its path."""
        self.document["finished"] = _now()
        self.document["load_end"] = load_average()
        target = os.environ.get("BENCH_OUT")
        path = Path(target) if target else RESULTS_DIR / f"{self.run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def close(self) -> None:
        """Remove the scratch file and restore the environment."""
        self._record.unlink(missing_ok=True)
        if self._previous is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = self._previous


@contextlib.contextmanager
def bench_run(command: str) -> Iterator[BenchRun]:
    """A :class:`BenchRun` that is written (whatever happened) and cleaned up at the end."""
    run = BenchRun(command)
    try:
        yield run
    finally:
        try:
            path = run.write()
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            print(f"\nresult file: {shown} (run {run.run_id}); README tables: python -m bench readme")
        finally:
            run.close()


def _describe(exc: BaseException) -> str:
    """The exception in one line; for a group, with its first leaf (a nursery's group of 200 timeouts says
    little by itself)."""
    text = "".join(traceback.format_exception_only(exc)).strip().splitlines()[0]
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    if leaf is not exc:
        text += f"; the first: {type(leaf).__name__}: {leaf}"
    return text


def _cpu_with_children() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
