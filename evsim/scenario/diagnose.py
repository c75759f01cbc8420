"""Every error of a scenario file at once (``evsim validate``), not only the first.

Theory of operation. The loader (:mod:`evsim.scenario.loader`) stops at its first error, which keeps each
check simple and every message exact. To find the others, :func:`scenario_errors` loads the parsed document
again and again: after each error it deletes the key the error names (its field path) and loads what is
left, so the next error the loader meets is another one. Only values are deleted, never a table (other
sections may name it). A key that must exist (the error names a missing
key) cannot be deleted; its table is, but the errors found after that may only be consequences of the
missing table (a station group naming a CSMS that is gone), so the search stops there, as it does at an
array entry (deleting one would renumber the entries after it) and at an error with no field path (a TOML
syntax error, an unreadable file). Every error is located in the original text, so lines stay right. A
document that loads is then checked by the runner's preflight, which reports all its refusals itself.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from evsim.errors import ConfigError
from evsim.scenario.loader import load_scenario, loads_document
from evsim.scenario.model import Scenario
from evsim.scenario.runner import preflight_errors
from evsim.toml_table import FieldPath

MAX_ERRORS = 50
"""Errors reported per file at most (a file this broken needs its first errors fixed first)."""

_PART = re.compile(r'\.?(?:(?P<bare>[A-Za-z0-9_-]+)|"(?P<quoted>(?:[^"\\]|\\.)*)"|\[(?P<index>\d+)\])')


def parse_path(text: str) -> FieldPath | None:
    """The field path of :func:`evsim.toml_table.format_path` read back (None: not such a path)."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None or m.end() == pos:
            return None
        if m.group("index") is not None:
            parts.append(int(m.group("index")))
        elif m.group("quoted") is not None:
            parts.append(re.sub(r"\\(.)", r"\1", m.group("quoted")))
        else:
            parts.append(m.group("bare"))
        pos = m.end()
    return tuple(parts)


def scenario_errors(path: str | os.PathLike[str]) -> tuple[Scenario | None, list[ConfigError]]:
    """Load a scenario file and report every error found (see the module doc).

    Args:
        path: the TOML file.

    Returns:
        The scenario when the file is valid (and no errors), else None and the errors in the order found
        (at most :data:`MAX_ERRORS`).
    """
    try:
        scenario = load_scenario(path)
    except ConfigError as first:
        return None, _more_errors(Path(path), first)
    return scenario, preflight_errors(scenario)


def _more_errors(path: Path, first: ConfigError) -> list[ConfigError]:
    errors = [first]
    try:
        text = path.read_text(encoding="utf-8")
        doc: dict[str, object] = tomllib.loads(text)
    except (OSError, ValueError, RecursionError):
        return errors  # unreadable, not UTF-8, or not TOML: the loader's one error says it all
    deleted: set[str] = set()
    while len(errors) < MAX_ERRORS:
        if not _delete(doc, parse_path(errors[-1].path)):
            break
        deleted.add(errors[-1].path)
        try:
            scenario = loads_document(doc, source=str(path), text=text)
        except ConfigError as exc:
            if exc.path in deleted:
                break  # the key is required: its deletion is the error now
            errors.append(exc)
            continue
        errors.extend(preflight_errors(scenario))
        break
    return errors[:MAX_ERRORS]


def _delete(doc: dict[str, object], path: FieldPath | None) -> bool:
    """Delete the key at ``path`` from ``doc``; False when it cannot be deleted safely (see the module doc)."""
    if not path or not isinstance(path[-1], str):
        return False
    node: object = doc
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or not 0 <= part < len(node):
                return False
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    if not isinstance(node, dict) or path[-1] not in node:
        return False  # a missing key: only its table could go, and what follows might be a consequence
    value = node[path[-1]]
    if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
        return False  # a whole table: other sections may name it
    del node[path[-1]]
    return True


__all__ = ["MAX_ERRORS", "parse_path", "scenario_errors"]
