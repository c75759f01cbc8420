"""``python -m bench readme [RESULT.json...]``: the README's performance tables, rendered from result files.

The README marks each generated table with comments; everything between them is rewritten, the prose around
them is left alone::

    <!-- bench:fleet run=20261206-235012 -->
    ...the title, the table, and a line naming the run and the machine...
    <!-- /bench:fleet -->

``fleet`` is a table key (the first argument of :func:`bench.common.bench_table`); ``run=`` names the result
file the block was rendered from (``bench/results/<run id>.json``), so ``tests/test_bench_readme.py`` can render
every block again and compare. A new block is written as the two markers alone; this command fills it.

Which run fills a block: the newest of the result files (by run id) whose section printed that table. Without
arguments the files are every ``bench/results/*.json`` made with the default sizes (a run that set ``BENCH_N`` or
another size setting is only used when named on the command line). A block no file has a table for is left as it
is, and said so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.results import FORMAT, RESULTS_DIR, ROOT, size_overrides

__all__ = ["BLOCK", "Block", "blocks", "find", "load", "render_block", "rewrite"]

BLOCK = re.compile(
    r"<!-- bench:(?P<key>[\w-]+)(?: run=(?P<run>[\w-]+))? -->\n(?P<body>.*?)<!-- /bench:(?P=key) -->",
    re.DOTALL,
)
"""A generated block of the README: the opening marker (with the run it was rendered from), the body, the end."""

README = ROOT / "README.md"


class Block:
    """One marked block of the README."""

    def __init__(self, match: re.Match[str]) -> None:
        self.key: str = match["key"]
        self.run: str | None = match["run"]
        self.body: str = match["body"]
        self.span = match.span()


def blocks(text: str) -> list[Block]:
    """The marked blocks of a README, in order."""
    return [Block(m) for m in BLOCK.finditer(text)]


def load(path: Path) -> dict[str, Any]:
    """A result file (``bench/results.py``); raises ValueError if it is not one."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bench result file ({FORMAT})")
    return doc


def find(results: Iterable[dict[str, Any]], key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The newest result (by run id) with a section that printed the table ``key``, and that section."""
    for doc in sorted(results, key=lambda d: str(d["run_id"]), reverse=True):
        for section in doc["sections"]:
            if any(t["key"] == key for t in section.get("tables", ())):
                return doc, section
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip() or " "


def _markdown(table: dict[str, Any]) -> list[str]:
    columns = table["columns"]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _load(section: dict[str, Any]) -> str:
    start, end = section.get("load_start") or [], section.get("load_end") or []
    if not start or not end:
        return "load not known"
    return f"load {start[0]:.1f} → {end[0]:.1f}"


def _date(stamp: str) -> str:
    """``2026-12-06T23:50:12Z`` → ``2026-12-06 23:50 UTC``."""
    return stamp[:16].replace("T", " ") + " UTC"


def run_line(doc: dict[str, Any], section: dict[str, Any]) -> str:
    """The line under a block's tables: the run (id, command, date, commit) and the machine it ran on."""
    m, git = doc["machine"], doc["git"]
    commit = (git.get("commit") or "unknown")[:10]
    if git.get("dirty"):
        commit += " with uncommitted changes"
    name = f"{m['name']}: " if m.get("name") else ""
    memory = f", {m['memory_gib']:g} GiB" if m.get("memory_gib") else ""
    return (
        f"Run {doc['run_id']} (`{doc['command']}`, {_date(doc['started'])}, commit {commit}), section "
        f"`{section['name']}`: {_minutes(float(section.get('wall_s', 0)))} at {_load(section)} "
        f"(1-minute average). Machine: {name}{m['cpu_model']}, {m['cores']} cores{memory}, {m['kernel']}; "
        f"Python {m['python']}, {m['openssl']} (pyOpenSSL {m['pyopenssl']}), trio {m['trio']}."
    )


def render_block(key: str, doc: dict[str, Any], section: dict[str, Any]) -> str:
    """The body of the block ``key`` (between the markers): each table of that key the section printed (its
    title, then the table), the problems the section recorded, and the run line."""
    out: list[str] = [""]
    for table in (t for t in section["tables"] if t["key"] == key):
        if table["title"]:
            out += [table["title"], ""]
        out += [*_markdown(table), ""]
    for problem in section.get("problems", ()):
        out += [f"Not in this run: {problem}", ""]
    out += [run_line(doc, section), ""]
    return "\n".join(out) + "\n"


def rewrite(text: str, results: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """``text`` (a README) with every marked block rendered from the newest of ``results`` that has its table;
    returns the new text and one line per block saying what it holds."""
    out: list[str] = []
    said: list[str] = []
    at = 0
    for block in blocks(text):
        out.append(text[at : block.span[0]])
        found = find(results, block.key)
        if found is None:
            out.append(text[block.span[0] : block.span[1]])
            said.append(f"{block.key}: kept as it was (no result file has this table)")
        else:
            doc, section = found
            body = render_block(block.key, doc, section)
            out.append(f"<!-- bench:{block.key} run={doc['run_id']} -->\n{body}<!-- /bench:{block.key} -->")
            said.append(f"{block.key}: run {doc['run_id']}, section {section['name']} ({section['status']})")
        at = block.span[1]
    out.append(text[at:])
    return "".join(out), said


def default_results() -> tuple[list[dict[str, Any]], list[str]]:
    """The result files in ``bench/results/`` made with the default sizes; and a line per file left out."""
    docs, left_out = [], []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        doc = load(path)
        overrides = size_overrides(doc.get("settings", {}))
        if overrides:
            settings = ", ".join(f"{k}={v}" for k, v in overrides.items())
            left_out.append(f"left out {path.name}: not the default sizes ({settings}); name it to use it")
        else:
            docs.append(doc)
    return docs, left_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench readme", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", type=Path, help="result files (default: bench/results/*.json)")
    p.add_argument(
        "--readme", type=Path, default=README, help="the README to rewrite (default: the repository's)"
    )
    p.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if the README is not up to date"
    )
    args = p.parse_args(argv)
    notes: list[str] = []
    if args.results:
        docs = [load(path) for path in args.results]
    else:
        docs, notes = default_results()
    for note in notes:
        print(note)
    text = args.readme.read_text(encoding="utf-8")
    new, said = rewrite(text, docs)
    for line in said:
        print(line)
    if args.check:
        if new != text:
            print(f"{args.readme} differs from the result files: run python -m bench readme", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"rewrote {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0
