"""Failed-authentication limits and the check-in's token check, against a real server.

Behind a reverse proxy every client may share one address (the proxy's), so
bad tokens from one client must not lock out the fleet and its admins: the
address limit refuses further failures only, and a valid credential from that
address is still served. A brute force on one credential is limited whatever
address it comes from, and then gets 429 even for the right secret. The
server trusts ``X-Forwarded-For`` from loopback here (``--forwarded-allow-ips``),
so each test chooses the client address its requests come from.

The check-in checks the host token before it reads the body: a client without
a valid token gets 401 before the server waits for, or parses, what it sends.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import (
    LiveServer,
    create_admin_token,
    create_key,
    hexid,
    inventory,
    live_server,
    register,
)

LIMIT = 3


@pytest.fixture(scope="module")
def limited(
    backend: str,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> Iterator[LiveServer]:
    """A server allowing LIMIT failed authentications a minute, behind a proxy on loopback."""
    # The options given last win over live_server's (which turns the limits off).
    with live_server(
        tmp_path_factory,
        new_database_url(backend),
        trusted_dir,
        "--failed-auth-per-minute",
        str(LIMIT),
        "--forwarded-allow-ips",
        "127.0.0.1",
    ) as running:
        yield running


def address() -> str:
    """A client address of its own, seen through the proxy."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def get_host(server: LiveServer, host_id: str, token: str, client: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client}
    return httpx.get(f"{server.url}/api/v1/hosts/{host_id}", headers=headers, timeout=30)


def test_bad_tokens_from_a_shared_address_do_not_lock_out_valid_credentials(
    limited: LiveServer,
) -> None:
    proxy = address()
    key = create_key(limited)["key"]
    host = register(limited, key)
    bad = [get_host(limited, host.id, f"nsh_{hexid(32)}_{hexid(8)}", proxy) for _ in range(6)]
    assert [response.status_code for response in bad] == [401] * LIMIT + [429] * 3
    assert "from this address" in bad[-1].json()["detail"]
    assert 1 <= int(bad[-1].headers["retry-after"]) <= 61
    # The fleet and its admins behind the same proxy are still served.
    headers = {"X-Forwarded-For": proxy}
    assert get_host(limited, host.id, host.token, proxy).status_code == 200
    checked_in = httpx.post(
        f"{limited.url}/api/v1/hosts/{host.id}/checkin",
        json=inventory("h"),
        headers={**headers, "Authorization": f"Bearer {host.token}"},
        timeout=30,
    )
    assert checked_in.status_code == 200, checked_in.text
    admin = {**headers, "Authorization": f"Bearer {limited.admin_token}"}
    assert httpx.get(f"{limited.url}/api/v1/admin/keys", headers=admin).status_code == 200
    registered = httpx.post(
        f"{limited.url}/api/v1/hosts/register",
        json={"registration_key": key, "hostname": "behind-proxy"},
        headers=headers,
    )
    assert registered.status_code == 201, registered.text
    # Another address (X-Forwarded-For is honoured) has its own count.
    stranger = get_host(limited, host.id, f"nsh_{hexid(32)}_{hexid(8)}", address())
    assert stranger.status_code == 401


def test_a_brute_force_on_one_credential_is_limited_from_any_address(
    limited: LiveServer,
) -> None:
    host = register(limited, create_key(limited)["key"])
    guesses = [
        get_host(limited, host.id, f"nsh_{host.id}_{hexid(40)}", address()) for _ in range(5)
    ]
    assert [response.status_code for response in guesses] == [401] * LIMIT + [429] * 2
    assert "with this credential" in guesses[-1].json()["detail"]
    # Locked for the window even with the right secret: a guess learns nothing.
    assert get_host(limited, host.id, host.token, address()).status_code == 429
    checkin = httpx.post(
        f"{limited.url}/api/v1/hosts/{host.id}/checkin",
        json=inventory("h"),
        headers={"Authorization": f"Bearer {host.token}", "X-Forwarded-For": address()},
    )
    assert checkin.status_code == 429
    # Other credentials are not affected.
    other = register(limited, create_key(limited)["key"])
    assert get_host(limited, other.id, other.token, address()).status_code == 200

    token_id = create_admin_token(limited.process.data_dir, limited.database_url).split("_")[1]
    codes = [
        httpx.get(
            f"{limited.url}/api/v1/admin/keys",
            headers={"Authorization": f"Bearer nsa_{token_id}_{hexid(40)}", "X-Forwarded-For": a},
        ).status_code
        for a in (address() for _ in range(5))
    ]
    assert codes == [401] * LIMIT + [429] * 2


# --- the check-in reads no body before its token is checked ----------------------------------


def test_checkin_with_a_bad_token_is_refused_before_its_body_is_parsed(
    server: LiveServer,
) -> None:
    host = register(server, create_key(server)["key"])
    other = register(server, create_key(server)["key"])
    malformed = b'{"checkin_id": '

    def post(token: str) -> httpx.Response:
        return httpx.post(
            f"{server.url}/api/v1/hosts/{host.id}/checkin",
            content=malformed,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    assert post(f"nsh_{host.id}_{hexid(40)}").status_code == 401
    assert post("not-a-token").status_code == 401
    assert post(other.token).status_code == 403
    # Only the host itself learns what is wrong with its body.
    refused = post(host.token)
    assert refused.status_code == 422 and refused.json()["detail"][0]["type"] == "json_invalid"


def test_checkin_with_a_bad_token_is_answered_without_waiting_for_its_body(
    server: LiveServer,
) -> None:
    """The client announces a 1 MB body and sends 1 KB: the 401 must come anyway.

    Were the body read first, the server would wait for the rest, and no answer
    would arrive before the client gave up (the socket timeout).
    """
    host = register(server, create_key(server)["key"])
    head = (
        f"POST /api/v1/hosts/{host.id}/checkin HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n"
        f"Authorization: Bearer nsh_{host.id}_{hexid(40)}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.process.port), timeout=20) as sock:
        sock.sendall(head + b"{" + b" " * 1023)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
