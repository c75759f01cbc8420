"""Reading the TLS model's TOML tables: typed getters whose errors name the field path, the value and the fix.

``from_toml`` constructors in ``config.py`` read a table (as ``tomllib`` returns it) with a :class:`Table`;
the model's own validation then runs in the class constructor, and :func:`rebased` moves the path of an
error it raises under the table's path. The scenario loader embeds these tables and adds file and line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evsim.errors import ConfigError
from evsim.tls.knobs import choices_fix, did_you_mean
from evsim.tls.pins import _join


def rebased(exc: ConfigError, path: str, renames: Mapping[str, str] | None = None) -> ConfigError:
    """``exc`` with its field path put under ``path`` (after renaming a leading part per ``renames``).

    Args:
        exc: an error raised by a model constructor (path relative to the model).
        path: the table's path in the file.
        renames: model path prefix -> TOML path prefix (``max_send_fragment`` -> ``record.max_send_fragment``;
            ``session`` -> ``""`` when ``path`` already ends with it).

    Returns:
        The error with the full path.
    """
    inner = exc.path
    for old, new in (renames or {}).items():
        if inner == old or inner.startswith((old + ".", old + "[")):
            rest = inner[len(old) :].lstrip(".")
            inner = new + ("." if new and rest and not rest.startswith("[") else "") + rest
            break
    full = _join(path, inner) if inner and not inner.startswith("[") else path + inner
    return ConfigError(exc.message, path=full, value=exc.value, fix=exc.fix, file=exc.file, line=exc.line)


class Table:
    """A TOML table being read: refuses unknown keys (with a did-you-mean) and reads typed values.

    Args:
        data: the table.
        path: its field path (``tls.profiles.strict``), prefixed to every error.
        known: the keys it may hold.

    Raises:
        ConfigError: not a table, or an unknown key.
    """

    def __init__(self, data: object, path: str, known: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError("expected a table", path=path, value=data, fix=f"write [{path}] with keys")
        for key in data:
            if key not in known:
                guess = did_you_mean(key, known)
                fix = f"did you mean {guess!r}?" if guess else "remove it; known keys: " + ", ".join(known)
                raise ConfigError("unknown key", path=_join(path, str(key)), value=key, fix=fix)
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        """The field path of ``key``."""
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        """True when the table sets ``key``."""
        return key in self.data

    def text(self, key: str, default: str, *, choices: Sequence[str] | None = None) -> str:
        """A string (one of ``choices`` when given)."""
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise ConfigError("expected a string", path=self.at(key), value=value, fix=f'write {key} = "…"')
        if choices is not None and value not in choices:
            raise ConfigError(
                f"unknown {key}", path=self.at(key), value=value, fix=choices_fix(value, choices)
            )
        return value

    def opt_text(self, key: str) -> str | None:
        """A string, or None when absent."""
        return self.text(key, "") or None if self.has(key) else None

    def flag(self, key: str, default: bool) -> bool:
        """``true`` / ``false``."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(
                "expected true or false", path=self.at(key), value=value, fix=f"write {key} = true"
            )
        return value

    def number(self, key: str, default: float) -> float:
        """An integer or float."""
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("expected a number", path=self.at(key), value=value, fix=f"write {key} = 10")
        return float(value)

    def opt_int(self, key: str) -> int | None:
        """An integer, or None when absent."""
        if not self.has(key):
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                "expected an integer", path=self.at(key), value=value, fix=f"write {key} = 2048"
            )
        return value

    def text_list(self, key: str) -> tuple[str, ...] | None:
        """An array of strings, or None when absent."""
        if not self.has(key):
            return None
        value = self.data[key]
        if not isinstance(value, list):
            raise ConfigError(
                "expected an array of strings", path=self.at(key), value=value, fix=f'write {key} = ["…"]'
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    "expected a string", path=f"{self.at(key)}[{i}]", value=item, fix='quote it: "…"'
                )
        return tuple(value)

    def table(self, key: str, known: Sequence[str]) -> Table:
        """A sub-table (empty when absent)."""
        return Table(self.data.get(key, {}), self.at(key), known)
