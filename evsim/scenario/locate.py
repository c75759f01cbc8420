"""Where in a TOML file a field is defined: field path → line number, for error messages.

``tomllib`` returns plain dicts and forgets where each value came from, so this module scans the raw text
once more with a small hand-written tokenizer and records, for every key and array element it meets, the
line where it starts. It understands what scenario files use: ``[table]`` and ``[[array.of.tables]]``
headers (numbered in file order, nested ones per parent element), dotted keys (``a.b = 1``), quoted keys,
inline tables, arrays spanning several lines, comments, and the four string forms (so ``#``, ``[`` or ``=``
inside strings do not confuse it).

Theory of operation. The scanner runs only on text that ``tomllib`` has already accepted, so it never
reports syntax errors; it is lenient where TOML is strict (a value it does not understand is skipped up to
the next ``,``, bracket or end of line). Line numbers are a help, not a contract: lookups fall back to the
nearest enclosing table that was found, and a bug in the scanner can only cost precision, never raise
(:func:`index_lines` returns whatever it recorded before the problem).

Field paths are tuples of keys (``str``) and array indices (``int``): ``("stations", "fleet", "count")``,
``("timeline", 2, "at")``; :func:`evsim.toml_table.format_path` renders them as ``stations.fleet.count`` and
``timeline[2].at``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

from evsim.toml_table import FieldPath, format_path

__all__ = ["FieldPath", "LineIndex", "format_path", "index_lines"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DATE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_DEPTH = 64  # nesting deeper than any scenario needs; deeper values are skipped, not followed
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


class LineIndex(Mapping[FieldPath, int]):
    """Lines (1-based) where each field path of a TOML document is defined.

    Build it with :func:`index_lines`. Besides the mapping interface it offers :meth:`line_of`, which falls
    back to the closest enclosing field.
    """

    __slots__ = ("_lines",)

    def __init__(self, lines: Mapping[FieldPath, int]) -> None:
        self._lines = dict(lines)

    def __getitem__(self, key: FieldPath) -> int:
        return self._lines[key]

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of ``path``, or of its closest recorded ancestor.

        Args:
            path: a field path; it need not exist (a missing required key reports its table's line).

        Returns:
            A 1-based line number, or None when neither the path nor any ancestor was found.
        """
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None


def index_lines(text: str) -> LineIndex:
    """Scan TOML text and record the line of every key, table header and array element.

    Args:
        text: a TOML document, normally one ``tomllib`` accepted.

    Returns:
        The index; partial if the scanner met something it does not understand.
    """
    scanner = _Scanner(text)
    with contextlib.suppress(Exception):  # a scanner bug must cost line precision only, never hide the error
        scanner.scan()
    return LineIndex(scanner.lines)


class _Scanner:
    """Tokenizer + recursive descent over TOML text, recording field path → line."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[FieldPath, int] = {}
        self.array_counts: dict[FieldPath, int] = {}
        self.current: FieldPath = ()

    # ------------------------------------------------------------ characters

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if 0 <= i < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        end = min(self.pos + count, len(self.text))
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces, tabs, comments and (when ``newlines``) line breaks."""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.advance((len(self.text) if end < 0 else end) - self.pos)
            else:
                return

    def skip_to_line_end(self) -> None:
        end = self.text.find("\n", self.pos)
        self.advance((len(self.text) if end < 0 else end + 1) - self.pos)

    # ------------------------------------------------------------ statements

    def scan(self) -> None:
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.peek() == "[":
                self.header()
            else:
                self.key_value(self.current)
            if self.pos == start:  # never loop in place on something unexpected
                self.skip_to_line_end()

    def header(self) -> None:
        line = self.line
        is_array = self.peek(1) == "["
        self.advance(2 if is_array else 1)
        self.skip_blank(newlines=False)
        keys = self.key()
        resolved: list[str | int] = []
        for i, part in enumerate(keys):
            resolved.append(part)
            is_last = i == len(keys) - 1
            prefix = tuple(resolved)
            self.lines.setdefault(prefix, line)
            if prefix in self.array_counts and not (is_last and is_array):
                resolved.append(self.array_counts[prefix] - 1)
        if is_array and keys:
            prefix = tuple(resolved)
            index = self.array_counts.get(prefix, 0)
            self.array_counts[prefix] = index + 1
            resolved.append(index)
        self.current = tuple(resolved)
        self.lines[self.current] = line
        self.skip_to_line_end()

    def key_value(self, table: FieldPath) -> None:
        line = self.line
        keys = self.key()
        if not keys:
            return
        path = table
        for part in keys:
            path = (*path, part)
            self.lines.setdefault(path, line)
        self.skip_blank(newlines=False)
        if self.peek() != "=":
            return
        self.advance()
        self.skip_blank(newlines=False)
        self.value(path, depth=0)

    def key(self) -> list[str]:
        """A dotted key; stops before ``=``, ``]`` or anything else that cannot continue it."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if m is None:
                    return parts
                parts.append(m.group())
                self.advance(m.end() - self.pos)
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.advance()

    # ------------------------------------------------------------ values

    def value(self, path: FieldPath, depth: int) -> None:
        c = self.peek()
        if c == "[" and depth < _MAX_DEPTH:
            self.array(path, depth + 1)
        elif c == "{" and depth < _MAX_DEPTH:
            self.inline_table(path, depth + 1)
        elif c in ('"', "'"):
            self.string()
        else:
            self.atom()

    def array(self, path: FieldPath, depth: int) -> None:
        self.advance()  # [
        index = 0
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c == "]":
                self.advance()
                return
            if c == ",":
                self.advance()
                continue
            start = self.pos
            self.lines.setdefault((*path, index), self.line)
            self.value((*path, index), depth)
            index += 1
            if self.pos == start:
                self.advance()

    def inline_table(self, path: FieldPath, depth: int) -> None:
        self.advance()  # {
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c == "}":
                self.advance()
                return
            if c == ",":
                self.advance()
                continue
            start = self.pos
            line = self.line
            keys = self.key()
            sub = path
            for part in keys:
                sub = (*sub, part)
                self.lines.setdefault(sub, line)
            self.skip_blank(newlines=False)
            if keys and self.peek() == "=":
                self.advance()
                self.skip_blank(newlines=False)
                self.value(sub, depth)
            if self.pos == start:
                self.advance()

    def atom(self) -> None:
        """A number, boolean or date-time: up to the next delimiter (a date may contain one space)."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in " \t\r\n,]}#":
            self.advance()
        if _DATE_PREFIX.match(self.text, start) and self.peek() == " " and self.peek(1).isdigit():
            self.advance()
            while self.pos < len(self.text) and self.text[self.pos] not in " \t\r\n,]}#":
                self.advance()

    def string(self) -> str:
        """Any of the four TOML string forms; returns its value (escapes decoded for basic strings)."""
        quote = self.peek()
        multi = self.text.startswith(quote * 3, self.pos)
        delim = quote * 3 if multi else quote
        self.advance(len(delim))
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if quote == '"' and c == "\\":
                out.append(self._escape())
                continue
            if self.text.startswith(delim, self.pos):
                if multi:  # up to two quotes right before the closing delimiter belong to the string
                    extra = 0
                    while extra < 2 and self.text.startswith(delim, self.pos + extra + 1):
                        extra += 1
                    out.append(quote * extra)
                    self.advance(extra)
                self.advance(len(delim))
                return "".join(out)
            if c == "\n" and not multi:  # unterminated: tomllib would have refused it
                return "".join(out)
            out.append(c)
            self.advance()
        return "".join(out)

    def _escape(self) -> str:
        nxt = self.peek(1)
        if nxt in _ESCAPES:
            self.advance(2)
            return _ESCAPES[nxt]
        if nxt in ("u", "U"):
            width = 4 if nxt == "u" else 8
            digits = self.text[self.pos + 2 : self.pos + 2 + width]
            self.advance(2 + width)
            try:
                return chr(int(digits, 16))
            except ValueError:
                return ""
        # line-ending backslash in a multi-line string: skip the break and following whitespace
        self.advance(1)
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.advance()
        return ""
