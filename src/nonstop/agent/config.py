"""The agent configuration file (`/etc/nonstop/nonstopctl.toml`) and its overrides.

Order of precedence: `--config FILE`, then env `NONSTOP_CONFIG`, then the
default path (a missing default file means all defaults). Env
`NONSTOP_TRUSTED_KEYS` overrides the trusted keys directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("/etc/nonstop/nonstopctl.toml")


class ConfigError(Exception):
    """The configuration file is missing (when named explicitly), unreadable or invalid."""


@dataclass(frozen=True)
class Blocklist:
    """Processes the agent never touches, by executable path or regex on that path."""

    paths: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def blocks(self, executable: str) -> bool:
        if executable in self.paths:
            return True
        return any(re.search(pattern, executable) for pattern in self.patterns)


@dataclass(frozen=True)
class AgentConfig:
    server_url: str | None = None
    auto_update: bool = True
    update_delay_hours: int = 0
    sticky: str | None = None
    userspace_enabled: bool = True
    trusted_keys_dir: Path = Path("/etc/nonstop/keys")
    state_dir: Path = Path("/var/lib/nonstop")
    cache_dir: Path = Path("/var/cache/nonstop")
    blocklist: Blocklist = field(default_factory=Blocklist)
    source: Path | None = None


_PATH_KEYS = {"trusted_keys_dir", "state_dir", "cache_dir"}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "server_url": str,
    "auto_update": bool,
    "update_delay_hours": int,
    "sticky": (str, int),
    "userspace_enabled": bool,
    "trusted_keys_dir": str,
    "state_dir": str,
    "cache_dir": str,
}


def _parse_blocklist(value: Any, where: Path) -> Blocklist:
    if not isinstance(value, dict) or set(value) - {"paths", "patterns"}:
        raise ConfigError(f"{where}: [blocklist] takes only 'paths' and 'patterns' lists")
    paths = value.get("paths", [])
    patterns = value.get("patterns", [])
    for name, items in (("paths", paths), ("patterns", patterns)):
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{where}: blocklist.{name} must be a list of strings")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: bad blocklist pattern {pattern!r}: {exc}") from None
    return Blocklist(tuple(paths), tuple(patterns))


def parse_config(document: dict[str, Any], where: Path) -> AgentConfig:
    known = {f.name for f in fields(AgentConfig)} - {"source"}
    values: dict[str, Any] = {"source": where}
    for key, value in document.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        if key == "blocklist":
            values[key] = _parse_blocklist(value, where)
            continue
        expected = _TYPES[key]
        # bool is a subclass of int in Python; do not let `true` pass as a number.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            raise ConfigError(f"{where}: setting {key!r} has the wrong type")
        values[key] = Path(str(value)) if key in _PATH_KEYS else value
    if "sticky" in values:
        values["sticky"] = str(values["sticky"])
    return AgentConfig(**values)


def load_config(explicit: Path | None = None) -> AgentConfig:
    env_path = os.environ.get("NONSTOP_CONFIG")
    path = explicit or (Path(env_path) if env_path else None)
    if path is None and not DEFAULT_CONFIG_PATH.exists():
        config = AgentConfig()
    else:
        where = path or DEFAULT_CONFIG_PATH
        try:
            document = tomllib.loads(where.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {where}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {where}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from None
        config = parse_config(document, where)
    keys_override = os.environ.get("NONSTOP_TRUSTED_KEYS")
    if keys_override:
        config = replace(config, trusted_keys_dir=Path(keys_override))
    return config
