"""This host's registration with a patch server: host id and token, kept in the state dir.

``registration.json`` (mode 0600, written atomically) holds the server URL,
the host id, the host token, the id of the registration key used (never the
key itself) and the feed. The token is the host's secret: it is sent only in
the Authorization header and never printed or logged; ``public_view`` is what
commands show.
"""

from __future__ import annotations

import re
import socket
from dataclasses import asdict, dataclass
from typing import Any

from nonstop.agent.actions import EXIT_SERVER, AgentError
from nonstop.agent.config import AgentConfig
from nonstop.agent.state import StateStore
from nonstop.bundle.manifest import utc_now

STATE_NAME = "registration"
_KEY = re.compile(r"^nsk_([0-9a-f]{32})_\S+$")


@dataclass(frozen=True)
class HostRegistration:
    """The contents of ``registration.json``; ``token`` is the host's secret (``public_view``)."""

    server_url: str
    host_id: str
    token: str
    key_id: str
    feed: str
    hostname: str
    registered_at: str

    def public_view(self) -> dict[str, Any]:
        """Everything but the token."""
        view = asdict(self)
        del view["token"]
        return view


class NotRegistered(AgentError):
    """A command that needs the patch server ran on a host with no registration (EXIT_SERVER)."""

    def __init__(self) -> None:
        super().__init__(
            "this host is not registered with a patch server (nonstopctl --register KEY)",
            EXIT_SERVER,
        )


def key_id_of(key: str) -> str:
    """The public id part of a registration key (``nsk_<id>_<secret>``)."""
    match = _KEY.match(key.strip())
    if not match:
        raise AgentError("that is not a registration key (expected nsk_<id>_<secret>)")
    return match.group(1)


def host_name() -> str:
    """This machine's name in the form the server accepts."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:255]
    return name or "localhost"


def load(store: StateStore) -> HostRegistration | None:
    """This host's registration, or None if it has none.

    AgentError when its keys are not a registration record's (their values are not
    checked); StateError when unreadable.
    """
    document = store.read(STATE_NAME)
    if not document:
        return None
    try:
        return HostRegistration(**document)
    except TypeError:
        raise AgentError(f"{store.path(STATE_NAME)} is not a registration record") from None


def require(store: StateStore) -> HostRegistration:
    """This host's registration; NotRegistered if it has none."""
    found = load(store)
    if found is None:
        raise NotRegistered()
    return found


def server_url_for(config: AgentConfig, explicit: str | None) -> str:
    """The server to register with: EXPLICIT (``--server``), else the config's; no trailing slash.

    AgentError when there is none or it is not an http(s) URL.
    """
    url = explicit or config.server_url
    if not url:
        raise AgentError("no patch server: pass --server URL or set server_url in the config")
    if not re.match(r"^https?://[^\s/]+", url):
        raise AgentError(f"server URL {url!r} is not an http(s) URL")
    return url.rstrip("/")


def save(store: StateStore, registration: HostRegistration) -> None:
    """Write the record, token included, to ``registration.json`` (mode 0600, atomic)."""
    store.write(STATE_NAME, asdict(registration))


def drop(store: StateStore) -> None:
    """Forget the registration locally (the server is not told; a missing file is fine)."""
    store.path(STATE_NAME).unlink(missing_ok=True)


def new_record(
    server_url: str, key: str, host_id: str, token: str, feed: str, hostname: str
) -> HostRegistration:
    """The record of a registration the server just accepted, stamped now.

    Only KEY's public id is kept, never the key; AgentError if KEY is not a registration key.
    """
    return HostRegistration(
        server_url=server_url,
        host_id=host_id,
        token=token,
        key_id=key_id_of(key),
        feed=feed,
        hostname=hostname,
        registered_at=utc_now(),
    )
