"""Reading TOML tables (as ``tomllib`` returns them): the one typed table reader and the one did-you-mean.

Every configuration file evsim reads - a scenario, a TLS model table embedded in one, a listener or service
table - goes through :class:`Table`. It refuses unknown keys first (with a did-you-mean from
:func:`did_you_mean`, :func:`difflib.get_close_matches` with ratio >= 0.6), then reads each known key with a
typed getter that checks the TOML type and, where asked, the range or the allowed values. Every error is a
:class:`~evsim.errors.ConfigError` naming the field path, the value (long strings cut, containers left out) and
a fix.

Where an error is located is the table's :class:`Site`: :class:`Prefix` (the default) renders the field path
under a textual prefix (``tls.profiles.strict``), which is what the TLS model's ``from_toml`` constructors
use; the scenario loader passes a site that also adds the file and the line (:mod:`evsim.scenario.locate`).

Field paths are tuples of keys (``str``) and array indices (``int``); :func:`format_path` renders them as
``stations.fleet.count``, ``timeline[2].at`` and ``cipher_suites."1.3"[0]``.

This is a base-layer module: it imports the standard library and :mod:`evsim.errors` only.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

from evsim.errors import ConfigError

__all__ = [
    "FieldPath",
    "Prefix",
    "Site",
    "Table",
    "choices_fix",
    "did_you_mean",
    "format_path",
    "join_path",
    "rebased",
    "shown",
    "type_name",
]

FieldPath: TypeAlias = tuple[str | int, ...]
"""A field's location in the parsed document: keys and array indices from the root."""

S = TypeVar("S", bound=str)

MAX_SHOWN = 60
"""Characters of a bad string value quoted in an error message."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------- paths, values, suggestions


def format_path(path: FieldPath) -> str:
    """Render a field path the way error messages show it.

    Args:
        path: keys and indices, e.g. ``("tls", "profiles", "strict", "cipher_suites", "1.3", 0)``.

    Returns:
        ``tls.profiles.strict.cipher_suites."1.3"[0]``: keys joined with dots (quoted when they are not bare
        TOML keys), indices in brackets.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = (
            part if _BARE_KEY.fullmatch(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        )
        out += ("." if out else "") + key
    return out


def join_path(prefix: str, rest: str) -> str:
    """``prefix`` and ``rest`` as one rendered path (``a.b`` + ``c`` → ``a.b.c``; ``a`` + ``[0]`` → ``a[0]``)."""
    if not prefix or not rest:
        return prefix or rest
    return prefix + rest if rest.startswith("[") else f"{prefix}.{rest}"


def type_name(value: object) -> str:
    """How an error message names a TOML value's type ("an integer", "a table"...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return "a date/time"
    return type(value).__name__


def shown(value: object) -> object:
    """A value as an error shows it: containers are described by the message instead, long strings cut."""
    if isinstance(value, dict | list):
        return None
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        return value[: MAX_SHOWN - 3] + "..."
    return value


def did_you_mean(word: object, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (difflib ratio >= 0.6), or None (also for a non-string)."""
    if not isinstance(word, str):
        return None
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def choices_fix(word: object, choices: Iterable[str], *, what: str = "use one of") -> str:
    """``did you mean 'x'? use one of 'a', 'b'`` (the guess only when there is a close one).

    Args:
        word: the value given.
        choices: the values allowed.
        what: the words before the list (``define it ([pki.roots.<name>]) or use one of``).
    """
    listed = list(choices)
    guess = did_you_mean(word, listed)
    names = ", ".join(repr(c) for c in listed) if listed else "(none defined)"
    return (f"did you mean {guess!r}? " if guess else "") + f"{what} {names}"


def rebased(exc: ConfigError, path: str, renames: Mapping[str, str] | None = None) -> ConfigError:
    """``exc`` with its field path put under ``path`` (after renaming a leading part per ``renames``).

    Args:
        exc: an error raised by a model constructor (path relative to the model).
        path: the table's path in the file.
        renames: model path prefix -> TOML path prefix (``max_send_fragment`` -> ``record.max_send_fragment``;
            ``session`` -> ``""`` when ``path`` already ends with it).

    Returns:
        The error with the full path (file and line kept).
    """
    inner = exc.path
    for old, new in (renames or {}).items():
        if inner == old or inner.startswith((old + ".", old + "[")):
            rest = inner[len(old) :].lstrip(".")
            inner = new + ("." if new and rest and not rest.startswith("[") else "") + rest
            break
    return ConfigError(
        exc.message, path=join_path(path, inner), value=exc.value, fix=exc.fix, file=exc.file, line=exc.line
    )


# ---------------------------------------------------------------- where errors point


class Site(Protocol):
    """Where a table's errors point: renders field paths and builds the errors."""

    def render(self, path: FieldPath) -> str:
        """The path as error messages show it."""
        ...

    def error(self, path: FieldPath, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        """The error for the field at ``path`` (``value`` is the raw value; the site decides how it shows)."""
        ...


class Prefix:
    """A :class:`Site` that renders paths under a textual prefix, without file or line.

    Keys are joined with dots as they are, unquoted (``tls.p.cipher_suites.1.3[0]``), the way the TLS model's
    own validation errors name its fields, so that both read alike.

    Args:
        prefix: the rendered path of the outermost table (``tls.profiles.strict``; "" for none).
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def render(self, path: FieldPath) -> str:
        out = self.prefix
        for part in path:
            out = join_path(out, f"[{part}]" if isinstance(part, int) else part)
        return out

    def error(self, path: FieldPath, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        return ConfigError(message, path=self.render(path), value=shown(value), fix=fix)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------- the reader


class Table:
    """One TOML table being read: refuses unknown keys up front, then typed getters per key.

    Args:
        data: the parsed value (checked to be a table).
        path: where the table is: a field path under ``site``, or (for callers that only know a rendered
            path, such as the TLS model's ``from_toml``) a string, which becomes the :class:`Prefix` site.
        keys: the keys it may hold.
        site: builds the errors (file and line); default :class:`Prefix`.
        what: how the fix names the table when it is not one (``"[simulation]"``).
        unknown_hint: replaces the list of allowed keys in unknown-key errors.
        elsewhere: keys that are valid in sibling tables but not in this one (parameters of other timeline
            actions): they are reported as "not a parameter of <what>" instead of "unknown key".

    Raises:
        ConfigError: not a table, or an unknown key.
    """

    def __init__(
        self,
        data: object,
        path: FieldPath | str,
        keys: Sequence[str],
        *,
        site: Site | None = None,
        what: str = "",
        unknown_hint: str = "",
        elsewhere: Collection[str] = (),
    ) -> None:
        if isinstance(path, str):
            site, path = Prefix(path), ()
        self.site: Site = site if site is not None else Prefix()
        self.path: FieldPath = path
        if not isinstance(data, Mapping):
            where = self.site.render(path)
            raise self.site.error(
                path,
                f"expected a table, got {type_name(data)}",
                value=data,
                fix=f"write it as a table {what or (f'[{where}]' if where else '')}".rstrip(),
            )
        self.data: Mapping[str, Any] = data
        self.keys = keys
        for key in data:
            if key not in keys:
                guess = did_you_mean(key, keys)
                hint = unknown_hint or "known keys: " + ", ".join(keys)
                fix = f"did you mean {guess!r}?" if guess else f"remove it; {hint}"
                message = f"not a parameter of {what}" if key in elsewhere else "unknown key"
                raise self.site.error((*path, key), message, fix=fix)  # the path ends with the key

    def child(self, path: FieldPath, data: object, keys: Sequence[str], *, what: str = "") -> Table:
        """A table found inside this one (same site); subclasses return their own type."""
        return Table(data, path, keys, site=self.site, what=what)

    # ------------------------------------------------------------ locations

    def at(self, key: str | int, *more: str | int) -> FieldPath:
        """The field path of ``key`` (and of ``more`` below it)."""
        return (*self.path, key, *more)

    def where(self, key: str | int, *more: str | int) -> str:
        """The rendered path of ``key``, as errors name it."""
        return self.site.render(self.at(key, *more))

    def has(self, key: str) -> bool:
        """True when the table sets ``key``."""
        return key in self.data

    def error(self, key: str, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        """The error for ``key``."""
        return self.site.error(self.at(key), message, value=value, fix=fix)

    def error_at(self, path: FieldPath, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        """The error for any field (an array element below a key, the table itself)."""
        return self.site.error(path, message, value=value, fix=fix)

    def require(self, key: str, fix: str) -> None:
        """Refuse the table when it lacks ``key``."""
        if key not in self.data:
            raise self.error(key, f"missing required key {key!r}", fix=fix)

    def _typed(self, key: str, check: Callable[[object], bool], expected: str, fix: str) -> object:
        value = self.data[key]
        if not check(value):
            raise self.error(key, f"expected {expected}, got {type_name(value)}", value=value, fix=fix)
        return value

    # ------------------------------------------------------------ scalars

    def string(
        self, key: str, default: str, *, one_line: bool = True, max_len: int = 1000, allow_empty: bool = False
    ) -> str:
        """A string: one line unless ``one_line`` is False, not blank unless ``allow_empty``."""
        if key not in self.data:
            return default
        value = self._typed(key, lambda v: isinstance(v, str), "a string", f'quote it: {key} = "..."')
        assert isinstance(value, str)
        if one_line and ("\n" in value or "\r" in value):
            raise self.error(key, "must be one line", value=value, fix="remove the line breaks")
        if not allow_empty and not value.strip():
            raise self.error(key, "must not be empty", value=value, fix=f"write a value, or remove {key}")
        if len(value) > max_len:
            raise self.error(key, f"too long (at most {max_len} characters)", value=value, fix="shorten it")
        return value

    def optional_string(
        self, key: str, *, one_line: bool = True, max_len: int = 1000, allow_empty: bool = False
    ) -> str | None:
        """:meth:`string`, or None when absent."""
        if key not in self.data:
            return None
        return self.string(key, "", one_line=one_line, max_len=max_len, allow_empty=allow_empty)

    def integer(
        self, key: str, default: int, lo: int | None = None, hi: int | None = None, *, fix: str = ""
    ) -> int:
        """An integer (not a boolean), in ``lo..hi`` when given."""
        if key not in self.data:
            return default
        value = self._typed(
            key, _is_int, "an integer", fix or f"write a whole number without quotes, e.g. {key} = {default}"
        )
        assert isinstance(value, int)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
            raise self.error(key, f"must be in {span}", value=value, fix=fix or f"use a value in {span}")
        return value

    def optional_integer(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        """:meth:`integer`, or None when absent."""
        return self.integer(key, 0, lo, hi) if key in self.data else None

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float = -math.inf,
        maximum: float = math.inf,
        positive: bool = False,
    ) -> float:
        """An integer or float, finite, in ``minimum..maximum`` (and > 0 when ``positive``)."""
        if key not in self.data:
            return default
        value = self._typed(
            key, _is_number, "a number", f"write a number without quotes, e.g. {key} = {default:g}"
        )
        assert isinstance(value, int | float)
        number = float(value)
        if not math.isfinite(number) or number < minimum or number > maximum or (positive and number <= 0):
            bounds = ["> 0" if positive else f">= {minimum:g}" if math.isfinite(minimum) else ""]
            bounds.append(f"at most {maximum:g}" if math.isfinite(maximum) else "")
            said = " and ".join(b for b in bounds if b) or "finite"
            raise self.error(key, f"must be {said}", value=value, fix=f"use e.g. {key} = {default:g}")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        """``true`` or ``false``."""
        if key not in self.data:
            return default
        value = self._typed(
            key,
            lambda v: isinstance(v, bool),
            "a boolean",
            f"write {key} = true or {key} = false (no quotes)",
        )
        assert isinstance(value, bool)
        return value

    def enum(self, key: str, allowed: Sequence[S], default: S) -> S:
        """One of ``allowed`` (a did-you-mean otherwise)."""
        if key not in self.data:
            return default
        value = self.data[key]
        for choice in allowed:
            if value == choice and type(value) is type(choice):
                return choice
        raise self.error(key, f"unknown value for {key}", value=value, fix=choices_fix(value, allowed))

    # ------------------------------------------------------------ arrays and references

    def string_list(
        self,
        key: str,
        default: tuple[str, ...],
        *,
        allowed: Sequence[str] | None = None,
        nonempty: bool = True,
        unique: bool = True,
        example: str = '["a", "b"]',
    ) -> tuple[str, ...]:
        """An array of strings (each one of ``allowed`` when given; not empty, each once, unless told)."""
        if key not in self.data:
            return default
        value = self._typed(
            key, lambda v: isinstance(v, list), "an array of strings", f"write {key} = {example}"
        )
        assert isinstance(value, list)
        if nonempty and not value:
            raise self.error(key, "must not be empty", value=[], fix=f"write e.g. {key} = {example}")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error_at(
                    self.at(key, i),
                    f"expected a string, got {type_name(item)}",
                    value=item,
                    fix=f"quote each element: {key} = {example}",
                )
            if allowed is not None and item not in allowed:
                raise self.error_at(
                    self.at(key, i), f"unknown value in {key}", value=item, fix=choices_fix(item, allowed)
                )
            if unique and item in out:
                raise self.error_at(self.at(key, i), f"listed twice in {key}", value=item, fix="list it once")
            out.append(item)
        return tuple(out)

    def optional_string_list(
        self, key: str, *, nonempty: bool = False, unique: bool = False, example: str = '["a", "b"]'
    ) -> tuple[str, ...] | None:
        """:meth:`string_list`, or None when absent."""
        if key not in self.data:
            return None
        return self.string_list(key, (), nonempty=nonempty, unique=unique, example=example)

    def reference(
        self, key: str, default: str, defined: Collection[str], kind: str, how_to_define: str
    ) -> str:
        """A name that must be defined elsewhere (``kind`` says what, ``how_to_define`` where)."""
        if key not in self.data:
            name = default
        else:
            value = self._typed(key, lambda v: isinstance(v, str), "a name (string)", f'write {key} = "name"')
            assert isinstance(value, str)
            name = value
        if name not in defined:
            raise self.error(
                key,
                f"undefined {kind} {name!r}",
                value=name,
                fix=choices_fix(name, defined, what=f"define it ({how_to_define}) or use one of"),
            )
        return name

    # ------------------------------------------------------------ tables

    def sub_table(self, key: str, keys: Sequence[str], what: str = "") -> Table | None:
        """The table at ``key``, or None when absent."""
        if key not in self.data:
            return None
        return self.child(self.at(key), self.data[key], keys, what=what)

    def table(self, key: str, keys: Sequence[str], what: str = "") -> Table:
        """The table at ``key`` (an empty one when absent)."""
        return self.child(self.at(key), self.data.get(key, {}), keys, what=what)
