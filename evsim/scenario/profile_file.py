"""``evsim tls capabilities --profile FILE``: a TLS profile written with the keys of a scenario file.

The file is either one profile table (the keys of ``[tls.profiles.<name>]`` in ``scenarios/README.md``,
at its top level) or a scenario file, whose ``[tls.profiles.<name>]`` tables are read; ``--name`` picks one
when it defines several. Either way the profile goes through the scenario loader, so the file is checked
exactly as a scenario's profile is, with the same keys, units and messages.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from evsim.errors import ConfigError
from evsim.scenario.loader import load_scenario, loads_document
from evsim.tls.config import TlsProfile

_PROFILE = "profile"
"""The name a file holding one profile table gets inside the scenario it is checked as."""
_FRAME: dict[str, object] = {"simulation": {"duration": "1h"}, "csms": {"main": {}}}
"""The least a scenario needs besides its TLS profiles."""


def load_tls_profile(file: str, name: str | None = None) -> TlsProfile:
    """The TLS profile a file describes (see the module doc).

    Args:
        file: the TOML file.
        name: the ``[tls.profiles.<name>]`` to use from a scenario file (None: its only one).

    Returns:
        The TLS layer's profile.

    Raises:
        ConfigError: unreadable, not TOML, a bad profile (file, field and fix), or no such profile.
    """
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the TLS profile ({exc})", file=file) from exc
    if "simulation" in data or "tls" in data:
        doc = data if "simulation" in data else {**_FRAME, **data}
        scenario = load_scenario(file) if "simulation" in data else loads_document(doc, source=file)
        defined = [n for n in scenario.tls_profiles if n != "default"] or ["default"]
        chosen = name if name is not None else (defined[0] if len(defined) == 1 else None)
        if chosen is None or chosen not in scenario.tls_profiles:
            raise ConfigError(
                "no such TLS profile in the file" if chosen else "the file defines several TLS profiles",
                path="--name",
                value=name,
                file=file,
                fix=f"pass --name with one of: {', '.join(defined)}",
            )
        return scenario.tls_profiles[chosen].engine_profile()
    return profile_from_table(data, source=file)


def profile_from_table(data: dict[str, object], *, source: str) -> TlsProfile:
    """The TLS profile of one ``[tls.profiles.<name>]`` table (keys as in a scenario file).

    Raises:
        ConfigError: a bad key or value (its path inside the table, and ``source``).
    """
    doc = {**_FRAME, "tls": {"profiles": {_PROFILE: data}}}
    try:
        scenario = loads_document(doc, source=source)
    except ConfigError as exc:
        prefix = f"tls.profiles.{_PROFILE}"
        path = exc.path.removeprefix(prefix).lstrip(".")
        raise ConfigError(exc.message, path=path, value=exc.value, fix=exc.fix, file=source) from None
    return scenario.tls_profiles[_PROFILE].engine_profile()


__all__ = ["load_tls_profile", "profile_from_table"]
