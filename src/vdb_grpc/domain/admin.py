"""Administration: read-only consistency checks, resetting all users' data, and re-encrypting provider keys.

``reencrypt_api_keys`` is shared by ``AdminService.ReencryptApiKeys`` and the command ``vdb-grpc reencrypt``.
It walks the instances holding key material in id order (keyset pagination, so rows added during the run are
picked up and none is visited twice) and rewrites each one in its own short transaction, after re-reading the
row under ``SELECT … FOR UPDATE``: an interrupted run leaves every row either old or new (both readable, as
long as the old key stays in ``ENCRYPTION_KEY_PREVIOUS``), and running it again finishes the job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

import asyncpg

from vdb_grpc.auth import Principal
from vdb_grpc.crypto import ApiKeyCipher, ApiKeyDecryptionError
from vdb_grpc.domain.access import require_admin
from vdb_grpc.errors import FailedPrecondition, InvalidArgument, PreconditionViolation
from vdb_grpc.queries import admin as q
from vdb_grpc.queries import instances as iq
from vdb_grpc.queries.instances import StoredKey

log = logging.getLogger(__name__)

RESET_CONFIRMATION = "RESET"
#: Findings listed per check; a summary finding counts the rest.
FINDINGS_PER_CHECK = 100
#: Rows read per round trip when walking stored keys.
KEY_BATCH = 500


class KeyOutcome(Enum):
    """What the re-encryption did with one instance's key."""

    REENCRYPTED = "reencrypted"
    ENCRYPTED_FROM_PLAINTEXT = "encrypted_from_plaintext"
    ALREADY_CURRENT = "already_current"
    FAILED = "failed"
    NO_KEY = "no_key"


@dataclass
class ReencryptCounts:
    """Result of a re-encryption run."""

    reencrypted: int = 0
    """Keys made with a previous key or in the legacy format, now under the current key."""
    encrypted_from_plaintext: int = 0
    """Plaintext keys from the legacy column, now encrypted (the plaintext cleared)."""
    already_current: int = 0
    """Keys that were already encrypted with the current key."""
    failed: int = 0
    """Keys that decrypt with none of the configured keys (left unchanged)."""
    failed_instances: list[str] = field(default_factory=list)
    """``owner/instance_handle`` of the failed keys."""

    def add(self, outcome: KeyOutcome, name: str) -> None:
        """Count one instance's outcome."""
        if outcome is KeyOutcome.NO_KEY:
            return
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)
        if outcome is KeyOutcome.FAILED:
            self.failed_instances.append(name)


@dataclass(frozen=True)
class SanityFinding:
    """One problem found by the sanity check (never containing a secret)."""

    check: str
    subject: str
    description: str


@dataclass(frozen=True)
class SanityReport:
    """Result of the sanity check."""

    findings: list[SanityFinding]

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings


@dataclass(frozen=True)
class ResetCounts:
    """What ResetDatabase deleted."""

    users: int
    projects: int
    embeddings: int
    instances: int
    definitions: int


def _missing_key_error() -> FailedPrecondition:
    return FailedPrecondition(
        "ENCRYPTION_KEY is not set: re-encrypting provider API keys needs the current key in ENCRYPTION_KEY "
        "(and the old ones in ENCRYPTION_KEY_PREVIOUS)",
        preconditions=[PreconditionViolation("ENCRYPTION_KEY_MISSING", "setting:ENCRYPTION_KEY", "not set")],
    )


async def _reencrypt_one(conn: asyncpg.Connection, cipher: ApiKeyCipher, instance_id: int) -> tuple[KeyOutcome, str]:
    """Bring one instance's key under the current key, inside the caller's transaction."""
    stored = await iq.lock_stored_key(conn, instance_id)
    if stored is None:  # deleted since it was listed
        return KeyOutcome.NO_KEY, ""
    name = stored.name
    if stored.encrypted is not None:
        # The encrypted column wins; a plaintext left beside it (written before the encrypted one) is cleared.
        try:
            if cipher.needs_reencryption(stored.encrypted):
                blob = cipher.reencrypt(stored.encrypted, owner=stored.owner, instance_handle=stored.instance_handle)
                outcome = KeyOutcome.REENCRYPTED
            else:
                cipher.decrypt(stored.encrypted, owner=stored.owner, instance_handle=stored.instance_handle)
                blob, outcome = stored.encrypted, KeyOutcome.ALREADY_CURRENT
        except ApiKeyDecryptionError as exc:
            # The message is about the blob (key id, format), never its content.
            log.warning("re-encryption: key of instance %s cannot be decrypted: %s", name, exc)
            return KeyOutcome.FAILED, name
        if outcome is KeyOutcome.REENCRYPTED or stored.legacy_plaintext is not None:
            await iq.set_encrypted_key(conn, instance_id, blob)
        return outcome, name
    if stored.legacy_plaintext:
        blob = cipher.encrypt(stored.legacy_plaintext, owner=stored.owner, instance_handle=stored.instance_handle)
        await iq.set_encrypted_key(conn, instance_id, blob)
        return KeyOutcome.ENCRYPTED_FROM_PLAINTEXT, name
    if stored.legacy_plaintext is not None:  # an empty legacy value is no key: normalise it to NULL
        await iq.set_encrypted_key(conn, instance_id, None)
    return KeyOutcome.NO_KEY, name


async def reencrypt_api_keys(
    pool: asyncpg.Pool,
    cipher: ApiKeyCipher,
    *,
    batch_size: int = KEY_BATCH,
    on_row: Callable[[int], Awaitable[None]] | None = None,
) -> ReencryptCounts:
    """Re-encrypt every stored provider key with the current key and encrypt legacy plaintext keys.

    Each instance is handled in its own transaction that locks the row and re-reads it, so the run is safe
    alongside the server, may be interrupted at any point and may be repeated (a second run finds every key
    current).

    Args:
        pool: Database pool.
        cipher: The configured cipher (current key encrypts; current and previous keys decrypt).
        batch_size: Instance ids read per round trip.
        on_row: Awaited before each row is processed (tests use it to interrupt a run).

    Returns:
        The counts per outcome and the names of the instances whose key failed to decrypt.
    """
    counts = ReencryptCounts()
    after = 0
    while True:
        async with pool.acquire() as conn:
            page = await iq.stored_keys_after(conn, after, batch_size)
        if not page:
            break
        for listed in page:
            if on_row is not None:
                await on_row(listed.instance_id)
            async with pool.acquire() as conn, conn.transaction():
                outcome, name = await _reencrypt_one(conn, cipher, listed.instance_id)
            counts.add(outcome, name)
        after = page[-1].instance_id
    log.info(
        "re-encryption finished with key id %s: reencrypted=%d encrypted_from_plaintext=%d already_current=%d "
        "failed=%d",
        cipher.key_id,
        counts.reencrypted,
        counts.encrypted_from_plaintext,
        counts.already_current,
        counts.failed,
    )
    return counts


def _capped(check: str, items: list[SanityFinding], total: int, what: str) -> list[SanityFinding]:
    """``items`` plus, when the query was cut off, one finding saying how many more there are."""
    if total > len(items):
        items = [*items, SanityFinding(check, "", f"… and {total - len(items)} more {what}")]
    return items


class Admin:
    """Use cases of AdminService."""

    def __init__(self, pool: asyncpg.Pool, cipher: ApiKeyCipher | None, *, allow_reset: bool = False) -> None:
        """Args:
        pool: the server's pool.
        cipher: protects provider API keys (None: no ENCRYPTION_KEY).
        allow_reset: the server's opt-in (``VDB_ALLOW_RESET``) to ResetDatabase; without it a reset is refused.
        """
        self._pool = pool
        self._cipher = cipher
        self._allow_reset = allow_reset

    async def sanity_check(self, principal: Principal) -> SanityReport:
        """Report inconsistencies without changing anything (admin)."""
        require_admin(principal, "run the sanity check")
        findings: list[SanityFinding] = []
        limit = FINDINGS_PER_CHECK
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            mismatches = await q.embedding_dimension_mismatches(conn, limit)
            findings += _capped(
                "EMBEDDING_DIMENSION_MISMATCH",
                [
                    SanityFinding(
                        "EMBEDDING_DIMENSION_MISMATCH",
                        f"project:{m.project}",
                        f"{m.embeddings} embedding(s) of project {m.project} have vector_dim "
                        f"{', '.join(map(str, m.found_dimensions))} but its instance {m.instance} has "
                        f"{m.instance_dimensions} dimensions",
                    )
                    for m in mismatches
                ],
                mismatches[0].total if mismatches else 0,
                "projects",
            )
            inconsistent = await q.inconsistent_vector_dims(conn, limit)
            findings += _capped(
                "EMBEDDING_VECTOR_DIM_INCONSISTENT",
                [
                    SanityFinding(
                        "EMBEDDING_VECTOR_DIM_INCONSISTENT",
                        f"project:{n.name}",
                        f"{n.count} embedding(s) of project {n.name} store a vector_dim that is not the length "
                        "of their vector",
                    )
                    for n in inconsistent
                ],
                inconsistent[0].total if inconsistent else 0,
                "projects",
            )
            orphans = await q.projects_without_instance(conn, limit)
            findings += _capped(
                "PROJECT_WITHOUT_INSTANCE",
                [
                    SanityFinding(
                        "PROJECT_WITHOUT_INSTANCE",
                        f"project:{n.name}",
                        f"project {n.name} is not bound to an LLM service instance; bind it with UpdateProject",
                    )
                    for n in orphans
                ],
                orphans[0].total if orphans else 0,
                "projects",
            )
            plaintext = await q.instances_with_plaintext_keys(conn, limit)
            findings += _capped(
                "PLAINTEXT_API_KEY",
                [
                    SanityFinding(
                        "PLAINTEXT_API_KEY",
                        f"instance:{n.name}",
                        f"instance {n.name} still has a plaintext API key in the legacy api_key column; run "
                        "`vdb-grpc reencrypt` (or AdminService/ReencryptApiKeys) to encrypt it",
                    )
                    for n in plaintext
                ],
                plaintext[0].total if plaintext else 0,
                "instances",
            )
        findings += await self._check_stored_keys()
        return SanityReport(findings)

    async def _check_stored_keys(self) -> list[SanityFinding]:
        """Findings for encrypted keys that do not decrypt, or that an old key made."""
        undecryptable: list[SanityFinding] = []
        stale: list[SanityFinding] = []
        encrypted = 0
        after = 0
        while True:
            async with self._pool.acquire() as conn:
                page = await iq.stored_keys_after(conn, after, KEY_BATCH)
            if not page:
                break
            after = page[-1].instance_id
            for stored in page:
                if stored.encrypted is None:
                    continue
                encrypted += 1
                if self._cipher is None:
                    continue
                problem = self._key_problem(self._cipher, stored)
                if problem is not None:
                    (undecryptable if problem.check == "API_KEY_UNDECRYPTABLE" else stale).append(problem)
        if self._cipher is None:
            if not encrypted:
                return []
            return [
                SanityFinding(
                    "ENCRYPTION_KEY_MISSING",
                    "setting:ENCRYPTION_KEY",
                    f"{encrypted} stored API key(s) cannot be checked or used: ENCRYPTION_KEY is not set",
                )
            ]
        cap = FINDINGS_PER_CHECK
        return _capped("API_KEY_UNDECRYPTABLE", undecryptable[:cap], len(undecryptable), "instances") + _capped(
            "API_KEY_NEEDS_REENCRYPTION", stale[:cap], len(stale), "instances"
        )

    @staticmethod
    def _key_problem(cipher: ApiKeyCipher, stored: StoredKey) -> SanityFinding | None:
        assert stored.encrypted is not None
        try:
            cipher.decrypt(stored.encrypted, owner=stored.owner, instance_handle=stored.instance_handle)
        except ApiKeyDecryptionError as exc:
            return SanityFinding(
                "API_KEY_UNDECRYPTABLE",
                f"instance:{stored.name}",
                f"the API key of instance {stored.name} does not decrypt with the configured keys ({exc}); "
                "add the key that made it to ENCRYPTION_KEY_PREVIOUS, or set a new API key on the instance",
            )
        if cipher.needs_reencryption(stored.encrypted):
            return SanityFinding(
                "API_KEY_NEEDS_REENCRYPTION",
                f"instance:{stored.name}",
                f"the API key of instance {stored.name} is encrypted with a previous key or the legacy format; run "
                "`vdb-grpc reencrypt` (or AdminService/ReencryptApiKeys)",
            )
        return None

    async def reset_database(self, principal: Principal, confirm: str) -> ResetCounts:
        """Delete every user's data, keeping ``_system``, its definitions and the reference tables (admin)."""
        require_admin(principal, "reset the database")
        if not self._allow_reset:
            # The admin key alone must not be able to wipe every user's data: the operator opts in per server.
            raise FailedPrecondition(
                "ResetDatabase is disabled on this server: start it with VDB_ALLOW_RESET=true to allow it",
                preconditions=[PreconditionViolation("RESET_NOT_ALLOWED", "setting:VDB_ALLOW_RESET", "not true")],
            )
        if confirm != RESET_CONFIRMATION:
            raise InvalidArgument.field(
                "confirm", f'must be exactly "{RESET_CONFIRMATION}" to delete every user and all their data'
            )
        async with self._pool.acquire() as conn, conn.transaction():
            # The lock wait stays under the statement timeout (a stuck writer ends as DEADLINE_EXCEEDED);
            # the deletes themselves may take longer on a large database.
            await q.lock_for_reset(conn)
            await q.disable_statement_timeout(conn)
            embeddings = await q.delete_all_embeddings(conn)
            projects = await q.delete_all_projects(conn)
            instances = await q.delete_all_instances(conn)
            definitions = await q.delete_user_definitions(conn)
            users = await q.delete_all_users(conn)
        log.warning(
            "database reset by the admin: deleted %d users, %d projects, %d embeddings, %d instances, %d definitions",
            users,
            projects,
            embeddings,
            instances,
            definitions,
        )
        return ResetCounts(
            users=users, projects=projects, embeddings=embeddings, instances=instances, definitions=definitions
        )

    async def reencrypt_api_keys(self, principal: Principal) -> ReencryptCounts:
        """Re-encrypt every stored key with the current key (admin); see :func:`reencrypt_api_keys`."""
        require_admin(principal, "re-encrypt API keys")
        if self._cipher is None:
            raise _missing_key_error()
        return await reencrypt_api_keys(self._pool, self._cipher)


__all__ = [
    "Admin",
    "KeyOutcome",
    "ReencryptCounts",
    "ResetCounts",
    "SanityFinding",
    "SanityReport",
    "reencrypt_api_keys",
]
