"""The check-in's memory of valid host secrets: bounded, and never a match for a wrong secret."""

from __future__ import annotations

from nonstop.server.auth import KnownHostSecrets, hash_secret


def test_known_host_secrets_match_only_the_right_secret_and_stay_bounded() -> None:
    known = KnownHostSecrets(max_entries=2)
    known.remember("a", hash_secret("secret-a"))
    assert known.matches("a", "secret-a")
    assert not known.matches("a", "secret-b") and not known.matches("b", "secret-a")
    known.remember("b", hash_secret("secret-b"))
    known.remember("c", hash_secret("secret-c"))  # over the bound: the oldest goes
    assert not known.matches("a", "secret-a")
    assert known.matches("b", "secret-b") and known.matches("c", "secret-c")
    known.forget("b")
    assert not known.matches("b", "secret-b")
