"""A CPU model for virtual time: service times of operations, and a per-node processor that charges them.

Theory of operation. Under trio's MockClock the code of a node runs in zero virtual time, so a storm of a
thousand TLS handshakes is over at ``t = 0``. The model puts the time back: a node (or a fleet of stations
sharing one process) gets a :class:`Cpu` with ``cores`` and a :class:`CpuProfile`; at each costly operation
the node calls :meth:`Cpu.charge` with the operation's kind, which takes the operation's service time on the
virtual clock once a core is free, first come first served (as an event loop runs each task step to its end,
the tasks that became ready first first). Work that arrives while the cores are busy waits, as on a real
machine, so latencies, time to drain and back-off retries come out of the run; a node's admission limits
(the CSMS's ``max_handshakes``, a fleet's connect window) are the nodes' own code and apply in virtual time
too.

The costs are pure data (:class:`CpuProfile`, a JSON file written by ``evsim calibrate``); kinds are
tuples of names, most general first, joined with ``/`` in the file:

* ``conn/<side>``: what a connection costs a node besides the operations below (accepting or opening the
  socket, the node's own tasks and bookkeeping per connection; ``evsim calibrate`` measures it as what a
  station's boot costs each side beyond its operations).
* ``tls/<side>/<mode>/<version>/<group>/<key>``: a TLS handshake; side ``client`` or ``server``, mode
  ``full``, ``resumed`` or ``mutual`` (full, with a client certificate); a server charges ``tls/server``
  before the handshake (the client waits meanwhile) and what the negotiated kind costs beyond it after; version ``1.2`` /
  ``1.3``; the key-exchange group (``x25519``, ``secp256r1``...); the server key type (``ec`` / ``rsa``).
* ``ws/<side>``: a WebSocket opening handshake.
* ``ocpp/serve/<action>``: answering a CALL (decode, dispatch, encode the answer), ``ocpp/call/<action>``:
  making one (encode, decode the answer); ``validate/<action>``: the schema checks of one CALL and its
  answer when the connection validates; ``relay/<side>``: a Local Controller moving one frame.

A lookup takes the longest prefix of the kind the profile lists (a profile measured for ``x25519`` answers
for any group when nothing more precise is known), and messages add ``per_kib`` of the longest matching
prefix times their size. Unknown kinds cost nothing.

The model is for virtual time only: on the real clock real CPU is spent and nodes get no :class:`Cpu`
(``evsim.world`` decides). Standard library, trio and attrs only (base layer).
"""

from __future__ import annotations

import collections
import contextvars
import functools
import heapq
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.toml_table import Table, choices_fix

__all__ = [
    "PROFILE_FORMAT",
    "Cpu",
    "CpuProfile",
    "CpuSpec",
    "CpuStatistics",
    "Kind",
    "load_profile",
    "set_cpu_owner",
    "shipped_profiles",
    "write_profile",
]

PROFILE_FORMAT: Final = "evsim-cpu-profile/1"
"""The ``format`` field of a profile file (a different one is refused)."""
PROFILES_DIR: Final = Path(__file__).resolve().parent / "cpu_profiles"
"""Where the shipped profiles live (``<name>.json``)."""
CPU_KEYS: Final = ("cores", "profile", "scale", "costs", "shared")
"""Keys of a scenario's ``cpu`` table."""
KIND_ROOTS: Final = ("conn", "tls", "ws", "ocpp", "validate", "relay")
"""The first name of every operation kind."""
MAX_CORES: Final = 1024
MAX_COST_US: Final = 10_000_000.0  # ten seconds of one core for one operation: a typo, not a cost

Kind = tuple[str, ...]
"""An operation kind: names, most general first (see the module docstring)."""


def _key(kind: Sequence[str]) -> str:
    return "/".join(kind)


@attrs.frozen
class CpuProfile:
    """Service times of operations on one machine (see the module docstring for the kinds).

    Attributes:
        name: the profile's name (its file name without ``.json`` for shipped ones).
        costs: kind (``/``-joined) -> microseconds of one core.
        per_kib: kind prefix -> further microseconds per KiB of the message.
        measured: where and how it was measured (machine, Python, OpenSSL, date, iterations); free-form.
    """

    name: str
    costs: FrozenMap[str, float]
    per_kib: FrozenMap[str, float] = attrs.field(factory=FrozenMap)
    measured: FrozenMap[str, str] = attrs.field(factory=FrozenMap)

    def cost(self, kind: Sequence[str], size: int = 0) -> float:
        """Seconds of one core that ``kind`` takes (0 for a kind no prefix of which is listed)."""
        return (_longest(self.costs, kind) + _longest(self.per_kib, kind) * size / 1024) / 1e6

    def merged(self, costs: Mapping[str, float]) -> CpuProfile:
        """This profile with ``costs`` (kind -> µs) replacing its entries: a given kind replaces the entry of
        that kind and of every longer kind under it (``tls/server`` sets every server handshake)."""
        kept = {
            k: v for k, v in self.costs.items() if not any(k == c or k.startswith(c + "/") for c in costs)
        }
        return attrs.evolve(self, costs=FrozenMap({**kept, **costs}))

    def to_json(self) -> dict[str, Any]:
        """The file form (see :func:`load_profile`)."""
        return {
            "format": PROFILE_FORMAT,
            "name": self.name,
            "unit": "us",
            "measured": dict(self.measured),
            "costs": dict(sorted(self.costs.items())),
            "per_kib": dict(sorted(self.per_kib.items())),
        }

    @classmethod
    def from_json(cls, data: object, *, source: str) -> CpuProfile:
        """Read the file form.

        Raises:
            ConfigError: not a profile of :data:`PROFILE_FORMAT`, or a cost that is not a number in
                ``0..MAX_COST_US``.
        """
        if not isinstance(data, Mapping) or data.get("format") != PROFILE_FORMAT:
            raise ConfigError(
                "not an evsim CPU profile",
                path=source,
                fix=f'a profile is a JSON object with "format": "{PROFILE_FORMAT}" (evsim calibrate writes one)',
            )
        tables: dict[str, FrozenMap[str, float]] = {}
        for field in ("costs", "per_kib"):
            table = data.get(field, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"{field} must be an object", path=f"{source}:{field}")
            tables[field] = FrozenMap((str(k), _cost(v, f"{source}:{field}.{k}")) for k, v in table.items())
        measured = data.get("measured", {})
        return cls(
            name=str(data.get("name", Path(source).stem)),
            costs=tables["costs"],
            per_kib=tables["per_kib"],
            measured=FrozenMap(
                (str(k), str(v)) for k, v in (measured.items() if isinstance(measured, Mapping) else ())
            ),
        )


def _longest(table: Mapping[str, float], kind: Sequence[str]) -> float:
    for n in range(len(kind), 0, -1):
        value = table.get(_key(kind[:n]))
        if value is not None:
            return value
    return 0.0


def _cost(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_COST_US:
        raise ConfigError(
            "a cost must be a number of microseconds",
            path=where,
            value=value,
            fix=f"use a number in 0..{MAX_COST_US:g}",
        )
    return float(value)


def shipped_profiles() -> tuple[str, ...]:
    """Names of the profiles shipped in the package."""
    return tuple(sorted(p.stem for p in PROFILES_DIR.glob("*.json")))


def load_profile(name_or_path: str, *, base: Path | None = None) -> CpuProfile:
    """A shipped profile by name, or a profile file by path (relative paths from ``base``).

    Raises:
        ConfigError: no such profile, unreadable file, or not a profile.
    """
    if "/" not in name_or_path and not name_or_path.endswith(".json"):
        path = PROFILES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(
                "unknown CPU profile",
                path="cpu.profile",
                value=name_or_path,
                fix=choices_fix(name_or_path, shipped_profiles()) + ", or a path to a profile file (.json)",
            )
    else:
        path = Path(name_or_path)
        if not path.is_absolute() and base is not None:
            path = base / path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read CPU profile: {exc}", path="cpu.profile", value=name_or_path, fix="check the path"
        ) from exc
    return CpuProfile.from_json(data, source=str(path))


@attrs.frozen
class CpuSpec:
    """A scenario's ``cpu`` table: ``{ cores = 1, profile = "reference", scale = 1.0, costs = {...}, shared = true }``.

    Attributes:
        cores: operations served at once.
        profile: a shipped profile's name or a profile file's path.
        scale: multiplies every cost (0.5: a machine twice as fast as the profile's).
        costs: kind -> µs, replacing the profile's entries.
        shared: stations only: the whole group shares one CPU, as the stations of one ``evsim stations``
            process do (False: each station has its own).
    """

    cores: int = 1
    profile: str = "reference"
    scale: float = 1.0
    costs: FrozenMap[str, float] = attrs.field(factory=FrozenMap)
    shared: bool = True

    @classmethod
    def from_toml(cls, table: Table, *, base: Path | None = None) -> CpuSpec:
        """Read a ``cpu`` table (already checked against :data:`CPU_KEYS`); the profile is loaded to check it,
        a profile path is taken relative to ``base`` (the scenario's directory).

        Raises:
            ConfigError: a bad value, with its path.
        """
        costs: dict[str, float] = {}
        raw = table.data.get("costs", {})
        if not isinstance(raw, Mapping):
            raise table.error("costs", "expected a table of kind = microseconds", value=raw)
        for k, v in raw.items():
            where = table.at("costs", str(k))
            root = str(k).split("/")[0]
            if root not in KIND_ROOTS:
                raise table.error_at(
                    where, "unknown operation kind", value=k, fix=choices_fix(root, KIND_ROOTS)
                )
            try:
                costs[str(k)] = _cost(v, table.where("costs", str(k)))
            except ConfigError as exc:
                raise table.error_at(where, exc.message, value=v, fix=exc.fix) from None
        profile = table.string("profile", "reference")
        if ("/" in profile or profile.endswith(".json")) and base is not None:
            profile = str(base / profile)
        spec = cls(
            cores=table.integer("cores", 1, lo=1, hi=MAX_CORES),
            profile=profile,
            scale=table.number("scale", 1.0, minimum=0.0, maximum=1000.0),
            costs=FrozenMap(costs),
            shared=table.boolean("shared", True),
        )
        try:
            load_profile(spec.profile)
        except ConfigError as exc:
            raise table.error("profile", exc.message, value=spec.profile, fix=exc.fix) from None
        return spec

    def build(self, name: str) -> Cpu:
        """A processor for node ``name`` (the profile is read once per spec, however many stations ask)."""
        return Cpu(name, self._profile(), cores=self.cores, scale=self.scale)

    @functools.cache  # noqa: B019 (frozen and hashable: one entry per spec, kept for the process's life)
    def _profile(self) -> CpuProfile:
        return load_profile(self.profile).merged(self.costs)


@attrs.frozen
class CpuStatistics:
    """What a :class:`Cpu` did.

    Attributes:
        cores: its capacity.
        busy_s: core-seconds spent (sum of the service served).
        queue_peak: most operations in the CPU at once, served or waiting (more than ``cores``: some waited).
        waiting: operations waiting for a core now.
        operations: kind (its first three names) -> operations charged.
        busy_by_kind: kind (first three names) -> core-seconds.
    """

    cores: int
    busy_s: float
    queue_peak: int
    waiting: int
    operations: Mapping[str, int]
    busy_by_kind: Mapping[str, float]


@attrs.define(eq=False)
class _Job:
    """One operation in a :class:`Cpu`: waiting (``start`` is NaN) or served since ``start``."""

    order: tuple[float, str, int]  # (arrival, owner, sequence): the order of service
    cost: float
    label: str
    scope: trio.CancelScope
    start: float = math.nan
    done: bool = False


_OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("evsim_cpu_owner", default="")


def set_cpu_owner(owner: str) -> None:
    """Name whom the current task (and the tasks it starts from now on) works for: a station its own id, a
    server's connection task the peer it serves. Operations that reach a :class:`Cpu` at the same virtual
    instant are served in the order of their owners' names, so trio's scheduling order does not decide."""
    _OWNER.set(owner)


class Cpu:
    """``cores`` processors serving operations one at a time each, first come first served, in virtual time.

    Theory of operation. A node's event loop (trio) runs each task step to its end before the next: the TLS
    work of a handshake, the parsing of a message are not interleaved with other tasks' work, and the tasks
    that became ready first run first. The model does the same with whole operations: a core serves one
    operation at a time, for its service time, and the operations waiting for a core are served in the order
    they arrived (ties at one virtual instant: by the owner's name, :func:`set_cpu_owner`, then by arrival,
    so a seed gives one run whatever order trio started the tasks in). A storm therefore drains in waves of
    operations, as a real process does: the first stations finish their handshakes while later ones still
    wait, and the next operations of the first overlap with other nodes' work on theirs.

    An operation that gets a core at the instant of a decision has not been served yet; it gives its core
    back to one that arrives at that same instant and comes before it in the order (only then is the order
    of one instant final). Each operation in service holds its own timer (a cancel-scope deadline at its
    end), so an arrival or a departure costs ``O(log n)``.

    Args:
        name: the node (or station group) it belongs to.
        profile: the service times.
        cores: processors.
        scale: multiplies every service time.
        sleep: False only accounts (busy time, operations) without taking any time: what the model would
            charge a run on the real clock (``evsim calibrate`` compares it with the CPU really spent).
    """

    def __init__(
        self, name: str, profile: CpuProfile, *, cores: int = 1, scale: float = 1.0, sleep: bool = True
    ) -> None:
        if cores < 1 or not math.isfinite(scale) or scale < 0:
            raise ValueError("cores must be >= 1 and scale a finite number >= 0")
        self.name = name
        self.profile = profile
        self.cores = cores
        self.scale = scale
        self.sleep = sleep
        self._waiting: list[tuple[tuple[float, str, int], _Job]] = []  # heap by order of service
        self._serving: list[_Job] = []  # at most ``cores``
        self._seq = itertools.count()
        self._in_system = 0  # waiting + in service
        self._busy = 0.0  # core-seconds of the operations ended (or left)
        self._queue_peak = 0
        self._ops: collections.Counter[str] = collections.Counter()
        self._busy_by: dict[str, float] = collections.defaultdict(float)

    async def charge(
        self, kind: Kind, size: int = 0, *, less: Kind | None = None, owner: str | None = None
    ) -> None:
        """Spend the service time of ``kind`` (a message of ``size`` bytes) on a core, after the operations
        that arrived before it; with ``less``, only what ``kind`` costs beyond ``less`` (charged before, when
        the precise kind was not known yet). ``owner`` orders it among operations arriving at the same
        instant (default: the task's, :func:`set_cpu_owner`). Cancelled, it leaves at once (what it was
        served counts)."""
        cost = self.profile.cost(kind, size) * self.scale
        if less is not None:
            cost = max(0.0, cost - self.profile.cost(less) * self.scale)
        label = _key(kind[:3])
        self._ops[label] += 1
        if cost <= 0:
            return
        if not self.sleep:
            self._busy += cost
            self._busy_by[label] += cost
            return
        now = trio.current_time()
        who = _OWNER.get() if owner is None else owner
        job = _Job((now, who, next(self._seq)), cost, label, trio.CancelScope())
        heapq.heappush(self._waiting, (job.order, job))
        self._in_system += 1
        self._queue_peak = max(self._queue_peak, self._in_system)
        self._dispatch(now)
        try:
            with job.scope:  # its deadline is its end of service, set when it gets a core
                await trio.sleep_forever()
        finally:
            now = trio.current_time()
            served = 0.0
            if not math.isnan(job.start):  # in service: to its end, or cancelled part of the way
                served = job.cost if now >= job.start + job.cost else now - job.start
                self._serving.remove(job)
            job.done = True  # a waiting one leaves the heap lazily
            self._in_system -= 1
            self._busy += served
            self._busy_by[label] += served
            self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        """Give free cores to the first waiting operations, and a core taken at ``now`` (not served yet) to a
        waiting operation that comes before its holder."""
        waiting, serving = self._waiting, self._serving
        while True:
            while waiting and waiting[0][1].done:
                heapq.heappop(waiting)
            if not waiting:
                return
            head = waiting[0][1]
            if len(serving) < self.cores:
                heapq.heappop(waiting)
                self._start(head, now)
                continue
            provisional = [j for j in serving if j.start == now]
            if not provisional:
                return
            last = max(provisional, key=lambda j: j.order)
            if head.order >= last.order:
                return
            heapq.heappop(waiting)
            serving.remove(last)
            last.start = math.nan
            last.scope.deadline = math.inf
            heapq.heappush(waiting, (last.order, last))
            self._start(head, now)

    def _start(self, job: _Job, now: float) -> None:
        job.start = now
        job.scope.deadline = now + job.cost
        self._serving.append(job)

    def statistics(self) -> CpuStatistics:
        """A snapshot of the counters (busy time up to now)."""
        busy = self._busy
        if self.sleep and self._serving:
            now = trio.current_time()
            busy += sum(min(j.cost, now - j.start) for j in self._serving)
        return CpuStatistics(
            cores=self.cores,
            busy_s=busy,
            queue_peak=self._queue_peak,
            waiting=self._in_system - len(self._serving),
            operations=dict(self._ops),
            busy_by_kind=dict(self._busy_by),
        )


def write_profile(profile: CpuProfile, path: Path) -> None:
    """Write ``profile`` as JSON (:data:`~evsim.cpu.PROFILE_FORMAT`; :func:`evsim.cpu.load_profile` reads it)."""
    data = profile.to_json()
    assert data["format"] == PROFILE_FORMAT
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
