"""API keys: create (the secret is shown once), list, revoke, and find the key a request presents.

A key is `vlq_sk_` + 256 random bits. Only its SHA-256 is stored. A fast, unsalted hash is right here, unlike for
passwords: slow salted hashes (bcrypt, argon2) exist to make guessing low-entropy secrets expensive, and no amount
of guessing finds a 256-bit random value, so they would only add ~100 ms of CPU to every request. Being unsalted,
the hash is also the lookup key: one indexed equality query finds the key, where a salted hash would have to be
checked against every row. A stolen table of hashes lets no one call the API.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.core.models import ApiKey, new_id, utcnow
from service.core.tenancy import DEFAULT_TENANT, TENANT_REGEX
from service.core.validation import Bool, OptionalNumber, RequestModel, Text, parse

PREFIX = "vlq_sk_"
_SHOWN_CHARS = len(PREFIX) + 4  # enough to tell keys apart in a list, far too little to matter as a secret
_TOUCH_EVERY_S = 60  # last_used_at is written at most this often per key, not on every request


class KeySpec(RequestModel):
    """What a new key is for: what POST /v1/keys and `vlq keys create` take; null numbers keep the configured
    defaults."""

    name: Annotated[str, Text(max_chars=100)] = Field(
        description="What the key is for, e.g. the client that will use it.")
    tenant: Annotated[str, Text(max_chars=64, pattern=TENANT_REGEX)] = Field(
        DEFAULT_TENANT, description="Whose jobs, batches and files it reaches. Over HTTP it can only be the admin "
        f"key's own tenant (the default there); `vlq keys create` takes any (default: {DEFAULT_TENANT}).")
    admin: Annotated[bool, Bool()] = Field(False, description="May manage its own tenant's keys (/v1/keys).")
    rate_limit_rps: Annotated[float | None, OptionalNumber(low=0.0, high=1e6)] = Field(
        None, description="Requests per second; 0 is unlimited.")
    max_queued_jobs: Annotated[int | None, OptionalNumber(low=0, high=10**9, integer=True)] = Field(
        None, description="Queued + running jobs of its tenant; 0 is unlimited.")

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> KeySpec:
        """Validate request fields (or CLI options) into a spec; raises ApiError naming the bad field."""
        return parse(cls, fields)


def create_key(session: Session, spec: KeySpec) -> tuple[ApiKey, str]:
    """Add a key to the session; returns it and its secret, which exists nowhere else afterwards."""
    secret = PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), name=spec.name, tenant=spec.tenant, key_hash=hash_secret(secret),
                 prefix=secret[:_SHOWN_CHARS], admin=spec.admin, rate_limit_rps=spec.rate_limit_rps,
                 max_queued_jobs=spec.max_queued_jobs, created_at=utcnow())
    session.add(key)
    return key, secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def find_key(session: Session, secret: str) -> ApiKey | None:
    """The key with this secret, revoked or not; None if there is none."""
    if not secret.startswith(PREFIX) or len(secret) > 128:
        return None
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret))).first()


def used_recently(key: ApiKey) -> bool:
    """Whether its last_used_at is recent enough to leave alone: requests do not each write, only one a minute."""
    return key.last_used_at is not None and (utcnow() - key.last_used_at).total_seconds() < _TOUCH_EVERY_S


def note_use(session: Session, key_id: str) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key from now on (its row stays, for the record); None if there is no such key."""
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
    return key

