"""What a scenario promises and whether the run kept the promise: the first and last tables of a report.

A scenario says in words what it is (``[simulation] description``) and what it shows (``outcome``); its
optional ``[expect]`` table states a few checks a machine can make (:class:`Expectation`). The report opens
with the words (:func:`scenario_table`) and closes with the checks, each recomputed from the events
(:func:`outcome_checks`, :func:`outcome_table`). Pure functions of the events and ``meta.json``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from evsim.metrics.canonical import EventLike, as_dict
from evsim.metrics.summary import Summary, Table
from evsim.metrics.topology import Topology, node_roles

#: Width the scenario's description and outcome are wrapped at in the first table.
WRAP = 100

#: Run outcomes (``meta.json``'s ``outcome``) of a run that ran to its end.
COMPLETED = ("completed", "all stations done")

#: Keys of the ``[expect]`` table.
EXPECT_KEYS = ("all_booted", "no_tx_lost", "reasons", "no_reasons", "security_events", "kinds")


@attrs.frozen(kw_only=True)
class Expectation:
    """The ``[expect]`` table of a scenario: checks of the outcome, each optional.

    Attributes:
        all_booted: every station was accepted by a CSMS (a ``booted`` event of its own) at least once.
        no_tx_lost: no transaction ended at its station without the CSMS recording its Ended event (the
            Links table's ``tx lost`` column sums to 0).
        reasons: failure reasons (the ``reason`` of any event: ``cert_invalid:unknown_ca``,
            ``downgrade_refused``...) that must occur.
        no_reasons: failure reasons that must not occur.
        security_events: OCPP security event types that must be raised or received.
        kinds: event kinds that must occur (``pin_promoted``, ``certificate_installed``...).
    """

    all_booted: bool = False
    no_tx_lost: bool = False
    reasons: tuple[str, ...] = ()
    no_reasons: tuple[str, ...] = ()
    security_events: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The checks as ``meta.json`` holds them (only those set)."""
        out: dict[str, Any] = {}
        for f in attrs.fields(Expectation):
            value = getattr(self, f.name)
            if value:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, doc: object) -> Expectation | None:
        """Read :meth:`as_json` back (from ``meta.json``); None when absent; unknown keys are ignored."""
        if not isinstance(doc, Mapping):
            return None
        kwargs: dict[str, Any] = {}
        for f in attrs.fields(Expectation):
            value = doc.get(f.name)
            if isinstance(value, bool):
                kwargs[f.name] = value
            elif isinstance(value, list):
                kwargs[f.name] = tuple(str(v) for v in value)
        return cls(**kwargs)


@attrs.frozen
class Check:
    """One check of the outcome.

    Attributes:
        name: what was checked (``all stations booted``...).
        ok: whether the run passed it.
        evidence: the figures that decided, recomputed from the events.
    """

    name: str
    ok: bool
    evidence: str


def scenario_table(meta: Mapping[str, Any]) -> Table | None:
    """The scenario's description and expected outcome (``meta.json``), or None when it states neither."""
    rows: list[tuple[str, str]] = []
    for label, key in (("description", "description"), ("expected outcome", "expected_outcome")):
        text = " ".join(str(meta.get(key) or "").split())
        for i, line in enumerate(textwrap.wrap(text, WRAP)):
            rows.append((label if i == 0 else "", line))
    if not rows:
        return None
    return Table("Scenario (what it is and what it should show)", ("part", "text"), tuple(rows))


def outcome_checks(
    events: Iterable[EventLike],
    expect: Expectation | None,
    *,
    summary: Summary,
    topology: Topology | None = None,
    run_outcome: str = "completed",
) -> list[Check]:
    """Check a run against its scenario's expectations.

    Args:
        events: the run's events.
        expect: the ``[expect]`` table, or None (only the run's completion is checked).
        summary: the run's summary tables (the ``tx lost`` column of the Links table).
        topology: which nodes are stations.
        run_outcome: ``meta.json``'s ``outcome``.

    Returns:
        One :class:`Check` per stated expectation, after "run completed".
    """
    evs = [as_dict(e) for e in events]
    checks = [Check("run completed", run_outcome in COMPLETED, f"outcome: {run_outcome}")]
    if expect is None:
        return checks
    roles = node_roles(evs, topology)
    if expect.all_booted:
        stations = {n for n, r in roles.items() if r == "station"}
        booted = {str(e["node"]) for e in evs if e["kind"] == "booted" and str(e["node"]) in stations}
        missing = sorted(stations - booted)
        evidence = f"{len(booted)} of {len(stations)} stations booted"
        if missing:
            evidence += f"; never: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        checks.append(Check("all stations booted", not missing and bool(stations), evidence))
    if expect.no_tx_lost:
        lost = _column_sum(summary, "Links", "tx lost")
        checks.append(Check("no transaction lost", lost == 0, f"tx lost (Links table): {lost}"))
    reasons = _reason_counts(evs)
    for reason in expect.reasons:
        n = reasons.get(reason, 0)
        checks.append(Check(f"reason {reason} occurs", n > 0, f"{n} event(s)"))
    for reason in expect.no_reasons:
        n = reasons.get(reason, 0)
        checks.append(Check(f"reason {reason} absent", n == 0, f"{n} event(s)"))
    security = _security_counts(evs)
    for kind in expect.security_events:
        n = security.get(kind, 0)
        checks.append(Check(f"security event {kind}", n > 0, f"{n} raised or received"))
    kinds: dict[str, int] = {}
    for e in evs:
        kinds[str(e["kind"])] = kinds.get(str(e["kind"]), 0) + 1
    for kind in expect.kinds:
        n = kinds.get(kind, 0)
        checks.append(Check(f"event {kind} occurs", n > 0, f"{n} event(s)"))
    return checks


def outcome_table(checks: Sequence[Check], *, stated: bool) -> Table:
    """The last table of the report: each check, passed or FAILED, with its evidence.

    Args:
        checks: :func:`outcome_checks`.
        stated: the scenario has an ``[expect]`` table (else the note says only completion was checked).
    """
    failed = sum(not c.ok for c in checks)
    verdict = "as expected" if not failed else f"{failed} check(s) FAILED"
    note = (
        "checks of the scenario's [expect] table, recomputed from events.jsonl"
        if stated
        else "the scenario has no [expect] table: only completion was checked"
    )
    return Table(
        f"Outcome check ({verdict})",
        ("check", "result", "evidence"),
        tuple((c.name, "pass" if c.ok else "FAILED", c.evidence) for c in checks),
        note,
    )


def _column_sum(summary: Summary, table_prefix: str, column: str) -> int:
    try:
        t = summary.table(table_prefix)
    except KeyError:
        return 0
    i = t.headers.index(column)
    return sum(v for row in t.rows if isinstance(v := row[i], int))


def _reason_counts(evs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in evs:
        reason = e.get("reason")
        if isinstance(reason, str) and reason:
            out[reason] = out.get(reason, 0) + 1
    return out


def _security_counts(evs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in evs:
        kind = e.get("security_event") or (e.get("type") if e["kind"] == "security_event_received" else None)
        if isinstance(kind, str) and kind:
            out[kind] = out.get(kind, 0) + 1
    return out
