"""API keys: ``sk_`` + 43 URL-safe random characters (256 bits), stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Final

__all__ = [
    "SCOPES",
    "SCOPE_ADMIN",
    "SCOPE_READ",
    "SCOPE_RUN",
    "SCOPE_WRITE",
    "KeyMaterial",
    "generate_key",
    "grants",
    "hash_key",
    "parse_authorization",
]

KEY_PREFIX: Final = "sk_"
MIN_SECRET_CHARS: Final = 32
SCOPE_READ: Final = "syncs:read"
SCOPE_WRITE: Final = "syncs:write"
SCOPE_ADMIN: Final = "syncs:admin"
SCOPE_RUN: Final = "syncs:run"

#: The one place the scopes' hierarchy is written: each scope and what it grants. Admin
#: includes write, write includes read; run (the workers' commands) stands apart.
_GRANTS: Final[dict[str, frozenset[str]]] = {
    SCOPE_READ: frozenset({SCOPE_READ}),
    SCOPE_WRITE: frozenset({SCOPE_WRITE, SCOPE_READ}),
    SCOPE_ADMIN: frozenset({SCOPE_ADMIN, SCOPE_WRITE, SCOPE_READ}),
    SCOPE_RUN: frozenset({SCOPE_RUN}),
}
SCOPES: Final = frozenset(_GRANTS)


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with ``scopes`` may do what needs the scope ``needed``."""
    return any(needed in _GRANTS.get(scope, ()) for scope in scopes)


class KeyMaterial:
    """A new key: the plaintext (shown once, never stored), its hash and its public id."""

    __slots__ = ("key_hash", "key_id", "plaintext")

    def __init__(self) -> None:
        self.plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        self.key_hash = hash_key(self.plaintext)
        self.key_id = "key_" + secrets.token_hex(8)

    def __repr__(self) -> str:
        return f"KeyMaterial(key_id={self.key_id!r})"


def generate_key() -> KeyMaterial:
    return KeyMaterial()


def hash_key(plaintext: str) -> bytes:
    """SHA-256 of the key. Keys are high-entropy, so a slow password hash would add nothing."""
    return hashlib.sha256(plaintext.encode()).digest()


_URLSAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def parse_authorization(header: bytes | None) -> str | None:
    """The key of a ``Bearer sk_...`` header, or None when missing or malformed."""
    if not header:
        return None
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        return None
    secret = token[len(KEY_PREFIX) :]
    if len(secret) < MIN_SECRET_CHARS or len(secret) > 256 or not set(secret) <= _URLSAFE:
        return None
    return token
