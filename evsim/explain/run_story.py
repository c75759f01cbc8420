"""``evsim explain RUN_DIR`` and ``evsim run --explain``: the story of a run, told from its run directory.

Theory of operation. Three pure steps and a thin command:

1. :func:`build_story` reads the events and ``meta.json`` of a run (:class:`~evsim.metrics.rundir.RunData`)
   and returns a :class:`Story`: the scenario's description and expected outcome, the episodes of the run
   (:mod:`evsim.explain.episodes`: start-up, attack, outage, recovery, rotation...) each with its
   :class:`Item` s — who, what, why (the verification step that failed), the knob that decided, the clocks
   each side used when validity was at stake, the OCPP requirement or RFC section
   (:mod:`evsim.explain.references`) and what happened next (back-off, security event, recovery) — and the
   check of the expected outcome with the first event proving each expectation;
2. :func:`render_text` turns the story into plain text at a depth: 1 is a one-page story (each episode's
   three most telling items), 2 every item with its reference, 3 also every handshake and notable event;
3. :meth:`Story.as_json` is the same structure as JSON (``--json``).

Nothing here reads anything but the run directory, so a saved run explains the same way years later.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from evsim.explain.episodes import (
    HANDSHAKE_KINDS,
    ROUTINE_KINDS,
    Episode,
    Finding,
    compress_names,
    split_episodes,
)
from evsim.explain.references import Reference, reference_for
from evsim.explain.wording import knob, normal_reason, what, why
from evsim.metrics.clocks import CLOCK_KINDS, offset_series
from evsim.metrics.outcome import Expectation, outcome_checks
from evsim.metrics.rundir import RunData, load, summary_of
from evsim.metrics.topology import Topology, node_roles
from evsim.report import human_duration

#: Depths of the narrative.
DEPTHS = (1, 2, 3)

#: Items an episode shows at depth 1.
BRIEF_ITEMS = 3

#: Notable events listed one by one per episode at depth 3 (the rest are counted).
MAX_EVENT_LINES = 2000

#: Kinds whose reason is not a fault (a BootNotification's reason is why the station booted).
_SUCCESS_KINDS = frozenset({"booted", "handshake_ok", "station_connected", "tls_accepted"})

#: Reasons whose verdict depends on the verifier's clock.
_TIME_REASONS = ("cert_invalid:expired", "cert_invalid:not_yet_valid", "peer_alert:certificate_expired")


@attrs.frozen
class Item:
    """One line of the story: a finding explained.

    Attributes:
        at: when it first happened (simulated seconds).
        until: when it last happened.
        side: role of the nodes.
        who: the nodes, condensed (``ST-0001, ST-0002 and 3 more``).
        nodes: how many nodes.
        count: how many events.
        kind: the event kind.
        reason: the event reason.
        what: what they did.
        why: the verification step that failed or the cause, "" when plain.
        knob: the configuration that decided, or "".
        clocks: the clocks each side used (validity failures), or "".
        reference: the governing requirement, or None.
        next: what happened next, or "".
        weight: how telling the item is (refusals and attacks first), for depth 1.
    """

    at: float
    until: float
    side: str
    who: str
    nodes: int
    count: int
    kind: str
    reason: str
    what: str
    why: str = ""
    knob: str = ""
    clocks: str = ""
    reference: Reference | None = None
    next: str = ""
    weight: int = 0

    def as_json(self) -> dict[str, Any]:
        doc = attrs.asdict(self, recurse=False)
        doc["reference"] = self.reference.as_json() if self.reference else None
        return doc


@attrs.frozen
class Chapter:
    """One episode told.

    Attributes:
        kind: the episode kind.
        start: simulated seconds.
        end: simulated seconds.
        title: the timeline actions that opened it, in words.
        items: what happened.
        event_lines: every notable event (depth 3 only; empty otherwise).
        more_events: notable events left out of ``event_lines``.
    """

    kind: str
    start: float
    end: float
    title: str
    items: tuple[Item, ...]
    event_lines: tuple[str, ...] = ()
    more_events: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "title": self.title,
            "items": [i.as_json() for i in self.items],
            "events": list(self.event_lines),
            "more_events": self.more_events,
        }


@attrs.frozen
class Proof:
    """A check of the expected outcome and the event that proves (or the figure that decides) it.

    Attributes:
        check: what was checked.
        ok: passed.
        evidence: the figures.
        first_event: the first event proving it, as a line, or "".
    """

    check: str
    ok: bool
    evidence: str
    first_event: str = ""


@attrs.frozen
class Story:
    """The narrative of a run (:func:`build_story`).

    Attributes:
        scenario: its name.
        description: what it is.
        expected_outcome: what it should show.
        outcome: how the run ended (``completed``...).
        duration: simulated seconds.
        depth: 1, 2 or 3.
        chapters: the episodes.
        proofs: the checks of the expected outcome.
    """

    scenario: str
    description: str
    expected_outcome: str
    outcome: str
    duration: float
    depth: int
    chapters: tuple[Chapter, ...]
    proofs: tuple[Proof, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "description": self.description,
            "expected_outcome": self.expected_outcome,
            "outcome": self.outcome,
            "duration_s": self.duration,
            "depth": self.depth,
            "episodes": [c.as_json() for c in self.chapters],
            "outcome_check": [attrs.asdict(p) for p in self.proofs],
        }


# ------------------------------------------------------------------------------------------ building


def build_story(run: RunData, depth: int = 2) -> Story:
    """The story of a run.

    Args:
        run: the run directory read back (:func:`evsim.metrics.rundir.load`).
        depth: 1 (one page), 2 (every finding) or 3 (also every handshake).

    Returns:
        The :class:`Story`.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, not {depth}")
    meta = run.meta
    topology = Topology.from_json(meta.get("topology"))
    roles = node_roles(run.events, topology)
    duration = float(meta.get("duration_s") or 0.0)
    episodes = split_episodes(run.events, roles, end=duration or None)
    start_utc = _start(meta)
    expect = Expectation.from_json(meta.get("expect"))
    chapters = []
    for n, ep in enumerate(episodes):
        later = [e for other in episodes[n + 1 :] for e in other.events]
        items = [_item(f, ep, later, run.events, start_utc, expect) for f in ep.findings]
        lines: list[str] = []
        more = 0
        if depth >= 3:
            notable = [e for e in ep.events if e["kind"] not in ROUTINE_KINDS]
            lines = [event_line(e) for e in notable[:MAX_EVENT_LINES]]
            more = max(0, len(notable) - MAX_EVENT_LINES)
        chapters.append(
            Chapter(
                kind=ep.kind,
                start=ep.start,
                end=ep.end,
                title=_title(ep),
                items=tuple(items),
                event_lines=tuple(lines),
                more_events=more,
            )
        )
    return Story(
        scenario=str(meta.get("scenario", run.path.name)),
        description=str(meta.get("description") or ""),
        expected_outcome=" ".join(str(meta.get("expected_outcome") or "").split()),
        outcome=str(meta.get("outcome", "?")),
        duration=duration,
        depth=depth,
        chapters=tuple(chapters),
        proofs=tuple(_proofs(run, topology)),
    )


def _start(meta: Mapping[str, Any]) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(str(meta["started_utc"]))
    except (KeyError, ValueError):
        return None


def _title(ep: Episode) -> str:
    if not ep.actions:
        return "the nodes start; the stations connect, handshake and boot"
    parts = []
    for a in ep.actions:
        params = " ".join(
            f"{k}={_short(v)}" for k, v in sorted(a.items()) if k not in ("t", "node", "seq", "kind")
        )
        parts.append(f"{a['kind']} {params}".strip())
    return "; ".join(parts)


def _short(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_short(v) for v in value)
    if isinstance(value, float) and value >= 1:
        return human_duration(value)
    return str(value)


#: Kinds that mark a step of a certificate or key lifecycle: telling even when nothing failed.
_MILESTONES = frozenset(
    {
        "pin_promoted",
        "pin_released",
        "peer_key_changed",
        "certificate_installed",
        "certificate_deleted",
        "certificate_signed_accepted",
        "cert_renewed",
        "firmware_installed",
    }
)


def _weight(f: Finding, expect: Expectation | None) -> int:
    boost = 0
    if expect is not None and (f.kind in expect.kinds or f.reason in (*expect.reasons, *expect.no_reasons)):
        boost = 3  # what the scenario promises to show is worth telling first
    return boost + _base_weight(f)


def _base_weight(f: Finding) -> int:
    if f.side == "attacker" or f.kind == "attack_result":
        return 5
    if f.kind == "handshake_failed":
        return 4
    if f.security_event or f.kind in _MILESTONES or f.kind in ("pin_mismatch", "security_event_received"):
        return 3
    if f.kind in ("connection_lost", "boot_rejected", "upgrade_rejected", "message_discarded"):
        return 2
    if f.kind in ("booted", "handshake_ok"):
        return 1
    return 1 if f.kind not in HANDSHAKE_KINDS else 0


def _item(
    f: Finding,
    ep: Episode,
    later: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    start_utc: _dt.datetime | None,
    expect: Expectation | None,
) -> Item:
    peers = f.sample.get("peers")
    who = compress_names(list(f.nodes))
    if f.side == "control" and "station" in f.sample:
        who = f"{who} (for {f.sample['station']})"
    if f.side in ("csms", "attacker") and isinstance(peers, list) and peers:
        who = f"{who} (peers: {compress_names([str(p) for p in peers])})"
    phrase = what(f.side, f.kind)
    if (
        f.side == "csms"
        and f.kind == "handshake_failed"
        and normal_reason(f.reason).startswith("peer_alert:")
    ):
        phrase = "saw the peer abort the TLS handshake"
    elif f.kind == "attack_result":
        phrase = f"attacked: {f.sample.get('outcome', '?')}"
    elif f.kind == "reconnect_wait" and "seconds_min" in f.sample:
        lo, hi = float(f.sample["seconds_min"]), float(f.sample["seconds_max"])
        phrase = f"waited {_range(lo, hi)} before reconnecting (back-off)"
    elif f.kind == "security_event_received" and f.security_event:
        phrase = f"received the security event {f.security_event}"
    elif f.kind in ("certificate_installed", "certificate_deleted", "certificate_call"):
        detail = f.sample.get("type") or f.sample.get("action") or ""
        phrase = f"{phrase} ({detail})" if detail else phrase
    because = why(f.reason, f.sample) if f.kind not in _SUCCESS_KINDS and f.side != "control" else ""
    offered = [a["versions"] for a in ep.actions if isinstance(a.get("versions"), list)]
    if because and normal_reason(f.reason) == "downgrade_refused" and offered:
        because += f"; the attack offered TLS {', '.join(str(v) for v in offered[0])} only"
    return Item(
        at=f.first,
        until=f.last,
        side=f.side,
        who=who,
        nodes=len(f.nodes),
        count=f.count,
        kind=f.kind,
        reason=f.reason,
        what=phrase,
        why=because,
        knob=knob(f.reason, f.kind),
        clocks=_clocks(f, events, start_utc) if normal_reason(f.reason) in _TIME_REASONS else "",
        reference=reference_for(f.kind, f.reason, f.security_event),
        next=_next(f, ep, later),
        weight=_weight(f, expect),
    )


def _clocks(f: Finding, events: Sequence[Mapping[str, Any]], start_utc: _dt.datetime | None) -> str:
    """The clock each side used at the first failure: stations with clock events by their replayed offset,
    every other node on true (simulated) time."""
    offsets = offset_series([e for e in events if e["kind"] in CLOCK_KINDS], [f.first])
    parts = []
    for node in f.nodes[:3]:
        off = offsets.get(node, [None])[0]
        when = ""
        if start_utc is not None:
            at = start_utc + _dt.timedelta(seconds=f.first + (off or 0.0))
            when = f" ({at:%Y-%m-%d %H:%M:%S} UTC)"
        if off is None:
            parts.append(f"{node} on true time{when}")
        else:
            parts.append(f"{node} {off:+.0f} s off true time{when}")
    if start_utc is not None:
        at = start_utc + _dt.timedelta(seconds=f.first)
        parts.append(f"the other side (no clock events: true time) {at:%Y-%m-%d %H:%M:%S} UTC")
    return "; ".join(parts)


def _next(f: Finding, ep: Episode, later: Sequence[Mapping[str, Any]]) -> str:
    """What followed for the nodes of a finding: back-off, queued security event, reconnection."""
    nodes = set(f.nodes)
    after = [e for e in (*ep.events, *later) if float(e["t"]) >= f.first and str(e["node"]) in nodes]
    out: list[str] = []
    if f.side == "station" and f.kind in ("handshake_failed", "connection_lost"):
        waits = [float(e["seconds"]) for e in after if e["kind"] == "reconnect_wait" and "seconds" in e]
        if waits:
            out.append(f"they back off {_range(min(waits), max(waits))} and retry")
        if f.security_event:
            received = [
                e
                for e in (*ep.events, *later)
                if e["kind"] == "security_event_received"
                and e.get("type") == f.security_event
                and str(e.get("station")) in nodes
            ]
            delivered = (
                f", delivered to {received[0]['node']} at {human_duration(float(received[0]['t']))}"
                if received
                else ", not delivered by the end of the run"
            )
            out.append(f"they queue the security event {f.security_event}{delivered}")
        boots = [e for e in after if e["kind"] == "booted" and float(e["t"]) > f.last]
        if boots:
            back = {str(e["node"]) for e in boots}
            out.append(
                f"{len(back)} of {len(nodes)} connect and boot again, the last at "
                f"{human_duration(max(float(e['t']) for e in boots if str(e['node']) in back))}"
                if len(back) < len(nodes)
                else f"all connect and boot again by {human_duration(_last_first_boot(boots, nodes))}"
            )
    elif f.side == "csms" and f.kind == "handshake_failed" and f.security_event:
        out.append(f"the CSMS logs the security event {f.security_event}; the client gets no OCPP session")
    elif f.side == "attacker":
        out.append("no OCPP message reaches the attacker")
    elif f.kind == "pin_mismatch":
        out.append("the station refuses the connection and keeps retrying with back-off")
    return "; ".join(out)


def _range(lo: float, hi: float) -> str:
    return human_duration(lo) if lo == hi else f"{human_duration(lo)} to {human_duration(hi)}"


def _last_first_boot(boots: Sequence[Mapping[str, Any]], nodes: set[str]) -> float:
    first: dict[str, float] = {}
    for e in boots:
        first.setdefault(str(e["node"]), float(e["t"]))
    return max(first[n] for n in nodes if n in first)


def _proofs(run: RunData, topology: Topology) -> list[Proof]:
    expect = Expectation.from_json(run.meta.get("expect"))
    checks = outcome_checks(
        run.events,
        expect,
        summary=summary_of(run),
        topology=topology,
        run_outcome=str(run.meta.get("outcome", "completed")),
    )
    firsts: dict[str, str] = {}
    for e in sorted(run.events, key=lambda e: float(e["t"])):
        for key in (
            f"reason {e.get('reason')} occurs",
            f"event {e['kind']} occurs",
            f"security event {e.get('security_event') or e.get('type')}",
        ):
            firsts.setdefault(key, event_line(e))
    return [Proof(c.name, c.ok, c.evidence, firsts.get(c.name, "")) for c in checks]


def event_line(e: Mapping[str, Any]) -> str:
    """One event as a line: time, node, kind and its fields."""
    fields = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "node", "seq", "kind") and v != "")
    return f"{human_duration(float(e['t'])):>8}  {e['node']} {e['kind']} {fields}".rstrip()


# ------------------------------------------------------------------------------------------ rendering


def render_text(story: Story) -> str:
    """The story as plain text at its depth (see the module doc)."""
    out = [f"The story of {story.scenario} ({human_duration(story.duration)} simulated, run {story.outcome})"]
    if story.description:
        out.append(f"What it is: {story.description}")
    if story.expected_outcome:
        out.append(f"What it should show: {story.expected_outcome}")
    for n, ch in enumerate(story.chapters, 1):
        out.append("")
        out.append(
            f"{n}. {ch.kind.capitalize()}, {human_duration(ch.start)} to {human_duration(ch.end)}: {ch.title}"
        )
        items = list(ch.items)
        if story.depth == 1:
            items = sorted(items, key=lambda i: (-i.weight, i.at))[:BRIEF_ITEMS]
            items.sort(key=lambda i: i.at)
        if not items:
            out.append("   nothing notable happened")
        cited: set[str] = set()
        for item in items:
            out.extend(_item_lines(item, story.depth, cited))
        if ch.event_lines:
            out.append("   every notable event:")
            out.extend(f"     {line}" for line in ch.event_lines)
            if ch.more_events:
                out.append(f"     ... and {ch.more_events} more")
    out.append("")
    passed = all(p.ok for p in story.proofs)
    out.append(f"Outcome: {'as expected' if passed else 'NOT as expected'}")
    for p in story.proofs:
        line = f"  [{'pass' if p.ok else 'FAIL'}] {p.check}: {p.evidence}"
        if p.first_event and story.depth >= 2:
            line += f"; first: {p.first_event.strip()}"
        out.append(line)
    return "\n".join(out)


def _item_lines(item: Item, depth: int, cited: set[str]) -> list[str]:
    """An item's lines; a rule already cited in the chapter (``cited``) is not repeated."""
    span = (
        f"at {human_duration(item.at)}"
        if item.until == item.at
        else f"from {human_duration(item.at)} to {human_duration(item.until)}"
    )
    times = f", {item.count} times" if item.count > 1 else ""
    reason = f" [{item.reason}]" if item.reason else ""
    lines = [f" - {span}: {item.who} {item.what}{reason}{times}"]
    if item.why:
        lines.append(f"     why: {item.why}")
    if depth >= 2:
        if item.knob:
            lines.append(f"     decided by: {item.knob}")
        if item.clocks:
            lines.append(f"     clocks: {item.clocks}")
        if item.reference is not None and item.reference.source not in cited:
            cited.add(item.reference.source)
            lines.append(f"     rule: {item.reference.source}: {item.reference.rule}")
    if item.next:
        lines.append(f"     next: {item.next}")
    return lines


# ------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evsim explain RUN_DIR`` (for the parser that owns the subcommand)."""
    parser.add_argument("run_dir", help="a run directory written by evsim run (runs/<scenario>-<timestamp>)")
    parser.add_argument(
        "--depth",
        type=int,
        choices=DEPTHS,
        default=2,
        help="1: a one-page story; 2: every finding with its rule (default); 3: also every handshake",
    )
    parser.add_argument("--json", action="store_true", help="print the story as one JSON document")


def explain_dir(run_dir: Path, *, depth: int = 2, as_json: bool = False) -> str:
    """The story of a run directory as text (or JSON text).

    Raises:
        ConfigError: not a readable run directory.
    """
    story = build_story(load(run_dir), depth)
    if as_json:
        return json.dumps(story.as_json(), indent=2, ensure_ascii=False, default=str)
    return render_text(story)


def main(args: argparse.Namespace) -> int:
    """``evsim explain RUN_DIR``: print the story of a run.

    Args:
        args: ``run_dir``, ``depth`` (default 2) and ``json`` (default false).

    Returns:
        0 (the outcome check is part of the story, not of the exit code).

    Raises:
        ConfigError: not a readable run directory.
    """
    depth = int(getattr(args, "depth", 2) or 2)
    print(explain_dir(Path(args.run_dir), depth=depth, as_json=bool(getattr(args, "json", False))))
    return 0
