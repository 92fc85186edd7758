"""The agent configuration file (`/etc/nonstop/nonstopctl.toml`) and its overrides.

Order of precedence: `--config FILE`, then env `NONSTOP_CONFIG`, then the
default path (a missing default file means all defaults). Env
`NONSTOP_TRUSTED_KEYS` overrides the trusted keys directory.

Settings changed by flags (``--enable-lib``/``--disable-lib``,
``--set-sticky-patch``) are kept in ``settings.json`` in the state dir and
override the file, so a package upgrade that rewrites the file keeps them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from nonstop.agent.state import StateStore
from nonstop.files import load_toml

DEFAULT_CONFIG_PATH = Path("/etc/nonstop/nonstopctl.toml")
OVERRIDES = "settings"
"""The state document holding settings changed by flags."""
OVERRIDABLE = ("userspace_enabled", "sticky")


class ConfigError(Exception):
    """The configuration file is missing (when named explicitly), unreadable or invalid."""


@dataclass(frozen=True)
class Blocklist:
    """Processes the agent never touches, by executable path or regex on that path."""

    paths: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def blocks(self, executable: str) -> bool:
        """True when EXECUTABLE is listed, or any pattern matches anywhere in it (``re.search``)."""
        if executable in self.paths:
            return True
        return any(re.search(pattern, executable) for pattern in self.patterns)


@dataclass(frozen=True)
class AgentConfig:
    """The agent's effective settings, every value checked (``parse_config``)."""

    server_url: str | None = None
    auto_update: bool = True
    update_delay_hours: int = 0
    """Bundles published less than this many hours ago are not applied (0 to a year)."""
    sticky: str | None = None
    userspace_enabled: bool = True
    trusted_keys_dir: Path = Path("/etc/nonstop/keys")
    state_dir: Path = Path("/var/lib/nonstop")
    cache_dir: Path = Path("/var/cache/nonstop")
    blocklist: Blocklist = field(default_factory=Blocklist)
    server_timeout_seconds: float = 30.0
    """Per request: connect, and each read (a stalled server is given up on after this)."""
    server_attempts: int = 4
    """Tries per request for transient failures (backoff with full jitter in between)."""
    daemon_interval_hours: float = 4.0
    """The daemon's periodic auto-update (each wait is jittered by +-10 %)."""
    daemon_rescan_seconds: float = 60.0
    """The daemon's /proc rescan, the fallback for exec events it missed."""
    source: Path | None = None


MAX_DELAY_HOURS = 24 * 365
"""The largest update delay the patch server accepts (docs/api.md)."""
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
    "server_timeout_seconds": (int, float),
    "server_attempts": int,
    "daemon_interval_hours": (int, float),
    "daemon_rescan_seconds": (int, float),
}
_POSITIVE = {
    "server_timeout_seconds",
    "server_attempts",
    "daemon_interval_hours",
    "daemon_rescan_seconds",
}


def normalize_sticky(value: str | int | None) -> str | None:
    """A sticky pin as the server spells it: ``level:N`` or ``date:YYYY-MM-DD``; None unpins.

    Accepts a level (``3``, ``level:3``), an ISO date (``2026-01-15``,
    ``date:2026-01-15``) or kcarectl's DDMMYY (``150126``); empty or ``none`` unpins.
    ValueError with a one-line reason otherwise.
    """
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "none", "unset"):
        return None
    kind, _, arg = text.rpartition(":")
    if kind not in ("", "level", "date"):
        raise ValueError(f"sticky patch {value!r} is not a level or a date")
    try:
        if kind == "date" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", arg):
            return f"date:{date.fromisoformat(arg).isoformat()}"
        if kind == "" and re.fullmatch(r"\d{6}", arg):
            return f"date:{datetime.strptime(arg, '%d%m%y').date().isoformat()}"
        level = int(arg)
    except ValueError:
        raise ValueError(f"sticky patch {value!r} is not a level or a date") from None
    if not 1 <= level <= 999_999_999:
        raise ValueError(f"sticky level {level} is out of range")
    return f"level:{level}"


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
    """The configuration in DOCUMENT (a parsed TOML file at WHERE), strictly checked.

    An unknown key, a wrong type or a value out of range (including a bad sticky pin)
    is a ConfigError naming WHERE; absent keys keep their defaults.
    """
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
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{where}: setting {key!r} has the wrong type")
        if key in _POSITIVE and isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"{where}: setting {key!r} must be positive")
        values[key] = Path(str(value)) if key in _PATH_KEYS else value
    if not 0 <= values.get("update_delay_hours", 0) <= MAX_DELAY_HOURS:
        raise ConfigError(f"{where}: update_delay_hours must be 0 to {MAX_DELAY_HOURS}")
    if "sticky" in values:
        try:
            values["sticky"] = normalize_sticky(values["sticky"])
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return AgentConfig(**values)


def with_overrides(config: AgentConfig) -> AgentConfig:
    """CONFIG with the settings that flags changed (``settings.json`` in its state dir).

    A null is no override: agents before ``--set-sticky-patch ''`` removed the
    override wrote ``"sticky": null``, which must not hide the file's pin."""
    document = StateStore(config.state_dir).read(OVERRIDES)
    changes = {key: document[key] for key in OVERRIDABLE if document.get(key) is not None}
    return replace(config, **changes) if changes else config


def set_override(config: AgentConfig, key: str, value: Any) -> None:
    """Persist a flag-changed setting; it overrides the configuration file from now on.
    None removes the override: the configuration file's value applies again."""
    if key not in OVERRIDABLE:
        raise ValueError(f"{key} cannot be changed by a flag")
    store = StateStore(config.state_dir)
    with store.locked(OVERRIDES):
        document = store.read(OVERRIDES)
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
        store.write(OVERRIDES, document)


def load_config(explicit: Path | None = None) -> AgentConfig:
    """The effective configuration: the file (module docstring), env overrides, then flag overrides.

    ConfigError when an explicitly named file is missing or any file is invalid;
    StateError when ``settings.json`` is unreadable.
    """
    env_path = os.environ.get("NONSTOP_CONFIG")
    path = explicit or (Path(env_path) if env_path else None)
    if path is None and not DEFAULT_CONFIG_PATH.exists():
        config = AgentConfig()
    else:
        where = path or DEFAULT_CONFIG_PATH
        config = parse_config(load_toml(where, "config file", ConfigError), where)
    keys_override = os.environ.get("NONSTOP_TRUSTED_KEYS")
    if keys_override:
        config = replace(config, trusted_keys_dir=Path(keys_override))
    return with_overrides(config)
