"""The package layers as a tested contract.

Every module under ``evsim/`` belongs to one layer of :data:`LAYERS` (bottom first) and imports only from its
own layer or the layers below. Some layers are narrower still (:data:`ONLY`): the OCPP core is sans-IO and
metrics consume events, so both import from the base layer alone. Imports are read with :mod:`ast`, so an
import inside a function or under ``if TYPE_CHECKING:`` counts like one at module level. On top of the
order, the packages must form no import cycle, the sans-IO OCPP modules must load without trio or
OpenSSL, and each confined third-party library (:data:`ENTRY_POINTS`) enters through one package. Layers
talk through public, typed interfaces: no module reaches for a private attribute by name with
``getattr``/``hasattr``/``setattr`` (an optional capability of a lower layer is a ``runtime_checkable``
protocol, e.g. ``evsim.net.base.NowaitSend``), except the pyOpenSSL internals listed in
:data:`PRIVATE_BY_NAME`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "evsim"

#: The layers, bottom first: (name, the modules and packages in it). A package entry covers its submodules;
#: ``evsim`` itself (the package's ``__init__``) is only that module.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "evsim",
            "evsim.errors",
            "evsim.clock",
            "evsim.timers",
            "evsim.report",
            "evsim.runtime",
            "evsim.backoff",
            "evsim.seeded",
            "evsim.urls",
            "evsim.recorder",
            "evsim.frozenmap",
            "evsim.text",
            "evsim.toml_table",
            "evsim.interrupts",
            "evsim.cpu",
            "evsim.shards",
        ),
    ),
    ("pki", ("evsim.pki",)),
    ("net", ("evsim.net",)),
    ("nts", ("evsim.nts",)),
    ("ship", ("evsim.ship",)),
    ("tls", ("evsim.tls",)),
    ("ws", ("evsim.ws", "evsim.http")),
    ("ocpp", ("evsim.ocpp",)),
    ("link", ("evsim.link",)),
    ("nodes", ("evsim.nodes",)),
    ("metrics", ("evsim.metrics",)),
    ("world", ("evsim.world", "evsim.testing")),
    ("scenario", ("evsim.scenario",)),
    ("explain", ("evsim.explain",)),
    (
        "cli",
        (
            "evsim.cli",
            "evsim.commands",
            "evsim.admin",
            "evsim.__main__",
            "evsim.calibrate",
            "evsim.stormfit",
            "evsim.workers",
            "evsim.deploy",
        ),
    ),
)

#: Layers that may import from fewer layers than all those below them.
ONLY: dict[str, frozenset[str]] = {
    "ocpp": frozenset({"base"}),  # sans-IO: no network, TLS or WebSocket code
    "nts": frozenset({"base"}),  # sans-IO NTS cores: records, packets, cookies
    "ship": frozenset({"base"}),  # sans-IO SHIP connection set-up and messages
    "metrics": frozenset({"base"}),  # consumes the event stream only
}


#: Third-party libraries that enter through one place: library -> the package or module allowed to import it
#: (None: no evsim module may; trio-websocket is only the benchmark's comparison for our WebSocket loop).
ENTRY_POINTS: dict[str, str | None] = {
    "OpenSSL": "evsim.tls",
    "wsproto": "evsim.ws",
    "fastjsonschema": "evsim.ocpp.schema",
    "rich": "evsim.metrics.live",
    "matplotlib": "evsim.metrics.plots",
    "trio_websocket": None,
}


def module_name(path: Path) -> str:
    """``evsim/tls/stream.py`` -> ``evsim.tls.stream``; a package's ``__init__`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """The layer a module belongs to (the longest matching entry of :data:`LAYERS`), or None."""
    best: tuple[int, str] | None = None
    for layer, entries in LAYERS:
        for entry in entries:
            covers = module == entry or (entry != "evsim" and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), layer)
    return None if best is None else best[1]


def rank(layer: str) -> int:
    return [name for name, _ in LAYERS].index(layer)


def imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The evsim modules ``module`` imports, anywhere in its source, with their line numbers.

    ``from evsim.x import y`` names the module ``evsim.x.y`` when that is a module, else ``evsim.x``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "evsim" or alias.name.startswith("evsim."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "evsim" and not target.startswith("evsim."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno


def import_graph() -> dict[str, set[tuple[str, int]]]:
    found = modules()
    known = set(found)
    return {m: set(imports(m, p, known)) for m, p in found.items()}


#: The one import allowed against the order: the package root's ``__getattr__`` (PEP 562) loads
#: ``evsim.world`` on first use of ``evsim.open_world``, so ``import evsim`` itself stays free of trio.
FACADE: frozenset[tuple[str, str]] = frozenset({("evsim", "evsim.world")})


def violations() -> dict[tuple[str, str], str]:
    """Every import against the layer order, as (importer, imported) -> a readable line."""
    out: dict[tuple[str, str], str] = {}
    for module, targets in import_graph().items():
        here = layer_of(module)
        assert here is not None
        for target, line in sorted(targets):
            if (module, target) in FACADE:
                continue
            there = layer_of(target)
            assert there is not None, f"{module}:{line} imports {target}, which is in no layer"
            upward = rank(there) > rank(here)
            narrow = here in ONLY and there != here and there not in ONLY[here]
            if upward or narrow:
                why = "upward" if upward else f"{here} may import only {', '.join(sorted(ONLY[here]))}"
                out[module, target] = f"{module}:{line} ({here}) imports {target} ({there}): {why}"
    return out


def unit(module: str) -> str:
    """The package a module counts under for cycles: ``evsim.<pkg>``, or the top-level module itself."""
    parts = module.split(".")
    if len(parts) >= 2 and (SOURCE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def package_cycles() -> set[frozenset[str]]:
    """The strongly connected components (more than one package) of the package import graph."""
    edges: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        src = unit(module)
        edges.setdefault(src, set())
        for target, _ in targets:
            dst = unit(target)
            edges.setdefault(dst, set())
            if dst != src:
                edges[src].add(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


def test_layer_table_entries_exist() -> None:
    found = modules()
    for _, entries in LAYERS:
        for entry in entries:
            assert entry in found, f"LAYERS names {entry}, which is not a module or package"


def test_imports_only_go_down() -> None:
    found = violations()
    assert not found, "imports against the layer order:\n" + "\n".join(sorted(found.values()))


def test_no_package_cycles() -> None:
    cycles = package_cycles()
    assert not cycles, f"import cycles between packages: {[sorted(c) for c in cycles]}"


def third_party_imports(path: Path) -> Iterator[str]:
    """The top-level names of the absolute, non-evsim imports in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.partition(".")[0]


def test_third_party_libraries_enter_through_one_place() -> None:
    wrong = []
    for module, path in modules().items():
        for library in set(third_party_imports(path)) & set(ENTRY_POINTS):
            allowed = ENTRY_POINTS[library]
            if allowed is None or not (module == allowed or module.startswith(allowed + ".")):
                wrong.append(f"{module} imports {library} (allowed in: {allowed or 'nothing'})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A function-level import, a TYPE_CHECKING import and a relative import all count."""
    source = tmp_path / "evsim" / "ocpp" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from evsim.tls import config\n"
        "def f() -> None:\n"
        "    import evsim.net.base\n"
        "from ..nodes import station\n"
        "from . import rpc\n",
        encoding="utf-8",
    )
    known = {"evsim.tls.config", "evsim.nodes.station", "evsim.ocpp.rpc"}
    found = {target for target, _ in imports("evsim.ocpp.x", source, known)}
    assert found == {"evsim.tls.config", "evsim.net.base", "evsim.nodes.station", "evsim.ocpp.rpc"}


_SANS_IO_PROBE = """
import sys
import {module}
loaded = sorted(name for name in ("trio", "OpenSSL") if name in sys.modules)
print(",".join(loaded))
"""


@pytest.mark.parametrize(
    "module",
    ["evsim.ocpp.rpc", "evsim.ocpp.netprofile", "evsim.nts", "evsim.nts.exchange", "evsim.ship"],
)
def test_sans_io_modules_load_neither_trio_nor_openssl(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SANS_IO_PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "", f"import {module} loaded {result.stdout.strip()}"


def documented_layers() -> list[tuple[str, tuple[str, ...], str]]:
    """The ```layers block of docs/architecture.md, bottom first: (layer, modules, description)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("```layers\n") + len("```layers\n")
    block = text[start : text.index("```", start)]
    out = []
    for line in block.splitlines():
        name, *words = line.split()
        paths = [w for w in words if w.endswith((".py", "/"))]
        description = " ".join(w for w in words if w not in paths)
        mods = tuple(
            "evsim" if p == "__init__.py" else "evsim." + p.removesuffix("/").removesuffix(".py")
            for p in paths
        )
        out.append((name, mods, description))
    return out[::-1]


def test_architecture_doc_lists_the_layers_of_the_code() -> None:
    documented = documented_layers()
    assert [(name, set(mods)) for name, mods, _ in documented] == [
        (name, set(entries)) for name, entries in LAYERS
    ], "docs/architecture.md's layers block and LAYERS differ"
    for name, _, description in documented:
        if name in ONLY:
            assert f"imports {' '.join(sorted(ONLY[name]))} only" in description, name


#: The private attributes a module may read by name, (module, attribute) -> why. Only evsim.tls reading
#: pyOpenSSL internals (the dependency pins in setup.cfg keep them stable; each use has a fallback).
PRIVATE_BY_NAME: dict[tuple[str, str], str] = {
    ("evsim.tls._ossl", "_ssl"): "Connection's SSL* for the cffi calls pyOpenSSL does not wrap",
    ("evsim.tls._ossl", "_context"): "Context's SSL_CTX* for the cffi calls pyOpenSSL does not wrap",
    ("evsim.tls._ossl", "_into_ssl"): "renew_memory_bios: the incoming memory BIO swapped for an empty one",
    ("evsim.tls._ossl", "_from_ssl"): "renew_memory_bios: the outgoing memory BIO swapped for an empty one",
    ("evsim.tls.engine", "_ssl"): "record-layer fast path: SSL_read/SSL_write on the raw binding",
    ("evsim.tls.engine", "_from_ssl"): "record-layer fast path: BIO_read of the outgoing memory BIO",
    ("evsim.tls.engine", "_into_ssl"): "record-layer fast path: BIO_write of the incoming memory BIO",
    ("evsim.tls.revocation", "_used"): "pyOpenSSL marks a Context a Connection was made from (CRLs too late)",
}

_BY_NAME = ("getattr", "hasattr", "setattr", "delattr")


def private_by_name(path: Path) -> Iterator[tuple[str, int]]:
    """``getattr(x, "_name", ...)`` and the like in a file: (attribute, line) for each literal name with one
    leading underscore (dunders are Python's, not private)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BY_NAME):
            continue
        if len(node.args) < 2:
            continue
        name = node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            attribute = name.value
            if attribute.startswith("_") and not attribute.startswith("__"):
                yield attribute, node.lineno


def test_no_private_attribute_is_read_by_name() -> None:
    found: dict[tuple[str, str], list[int]] = {}
    for module, path in modules().items():
        for attribute, line in private_by_name(path):
            found.setdefault((module, attribute), []).append(line)
    wrong = [
        f"{module}:{lines} reads {attribute!r} by name: make it a public method of a typed protocol"
        for (module, attribute), lines in sorted(found.items())
        if (module, attribute) not in PRIVATE_BY_NAME
    ]
    assert not wrong, "\n".join(wrong)
    stale = set(PRIVATE_BY_NAME) - set(found)
    assert not stale, f"PRIVATE_BY_NAME lists reads that are gone: {sorted(stale)}"


def test_the_private_attribute_checker_sees_getattr_hasattr_and_setattr(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "a = getattr(t, '_send_nowait', None)\n"
        "b = hasattr(t, '_flush')\n"
        "setattr(t, '_x', 1)\n"
        "c = getattr(t, '__globals__', {})\n"
        "d = getattr(t, 'statistics', None)\n"
        "e = t.getattr('_y')\n",
        encoding="utf-8",
    )
    assert list(private_by_name(source)) == [("_send_nowait", 1), ("_flush", 2), ("_x", 3)]
