"""The agent configuration file and its environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.agent.config import (
    AgentConfig,
    ConfigError,
    load_config,
    normalize_sticky,
    set_override,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nonstopctl.toml"
    path.write_text(text)
    return path


def test_defaults_when_no_file(monkeypatch, tmp_path):
    monkeypatch.delenv("NONSTOP_CONFIG", raising=False)
    monkeypatch.delenv("NONSTOP_TRUSTED_KEYS", raising=False)
    monkeypatch.setattr("nonstop.agent.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config() == AgentConfig()


def test_values_and_blocklist(tmp_path, monkeypatch):
    monkeypatch.delenv("NONSTOP_TRUSTED_KEYS", raising=False)
    path = write(
        tmp_path,
        """
server_url = "https://patches.example"
userspace_enabled = false
trusted_keys_dir = "/srv/keys"
sticky = 3
[blocklist]
paths = ["/usr/sbin/sshd"]
patterns = ["^/opt/legacy/"]
""",
    )
    config = load_config(path)
    assert config.server_url == "https://patches.example"
    assert config.userspace_enabled is False
    assert config.trusted_keys_dir == Path("/srv/keys")
    assert config.sticky == "level:3"  # spelled as the server does
    assert config.blocklist.blocks("/usr/sbin/sshd")
    assert config.blocklist.blocks("/opt/legacy/bin/app")
    assert not config.blocklist.blocks("/usr/bin/python3")


def test_env_overrides(tmp_path, monkeypatch):
    path = write(tmp_path, 'trusted_keys_dir = "/from/file"\n')
    monkeypatch.setenv("NONSTOP_CONFIG", str(path))
    monkeypatch.setenv("NONSTOP_TRUSTED_KEYS", "/from/env")
    config = load_config()
    assert config.source == path
    assert config.trusted_keys_dir == Path("/from/env")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown setting"),
        ("auto_update = 'yes'\n", "wrong type"),
        ("update_delay_hours = true\n", "wrong type"),
        ("update_delay_hours = -1\n", "must be 0 to 8760"),
        ("update_delay_hours = 9000\n", "must be 0 to 8760"),
        ("[blocklist]\npatterns = ['(']\n", "bad blocklist pattern"),
        ("[blocklist]\nusers = []\n", "blocklist"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_invalid_files_give_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_explicit_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("given", "pin"),
    [
        ("3", "level:3"),
        (3, "level:3"),
        ("level:12", "level:12"),
        ("2026-01-15", "date:2026-01-15"),
        ("date:2026-01-15", "date:2026-01-15"),
        ("150126", "date:2026-01-15"),  # kcarectl's DDMMYY
        ("", None),
        ("none", None),
    ],
)
def test_sticky_patch_spellings(given, pin):
    assert normalize_sticky(given) == pin


@pytest.mark.parametrize("given", ["soon", "level:0", "2026-02-30", "321399", "date:x", "key:3"])
def test_bad_sticky_patches_are_refused(given):
    with pytest.raises(ValueError, match="sticky"):
        normalize_sticky(given)


def test_flag_settings_override_the_file_and_persist(tmp_path, monkeypatch):
    monkeypatch.delenv("NONSTOP_TRUSTED_KEYS", raising=False)
    path = write(tmp_path, f'state_dir = "{tmp_path / "state"}"\nsticky = "level:2"\n')
    config = load_config(path)
    assert (config.userspace_enabled, config.sticky) == (True, "level:2")
    set_override(config, "userspace_enabled", False)
    set_override(config, "sticky", "level:1")
    again = load_config(path)
    assert (again.userspace_enabled, again.sticky) == (False, "level:1")
    # Unpinning by flag removes the flag's pin: the file's own pin applies again, not "none".
    set_override(config, "sticky", None)
    assert load_config(path).sticky == "level:2"
    # Agents before that fix wrote a null, which must not hide the file's pin either.
    (tmp_path / "state" / "settings.json").write_text('{"sticky": null}')
    assert load_config(path).sticky == "level:2"
    with pytest.raises(ValueError):
        set_override(config, "state_dir", "/elsewhere")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server_attempts = 0\n", "must be positive"),
        ("daemon_interval_hours = -1\n", "must be positive"),
        ("server_timeout_seconds = true\n", "wrong type"),
        ('sticky = "tomorrow"\n', "not a level or a date"),
    ],
)
def test_bad_online_settings(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
