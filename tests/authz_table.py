"""The authorization matrix: every RPC x every kind of caller → the status the call ends with.

One table, three uses: tests/test_authorization_matrix.py runs every cell over real gRPC (and checks that each
refused call changed nothing in the database); scripts/render_permissions.py renders docs/permissions.md from
it (a test checks the committed file is that rendering); and a test fails when a proto RPC has no row here.

The world every cell runs in (reset after every successful call):

- alice owns instance ``alice/inst`` (shared with eddie as editor and rita as reader), definition
  ``alice/defn`` (shared with rita as reader), and projects ``alice/proj`` and ``alice/pub`` (``public_read``),
  both bound to ``alice/inst``, shared with eddie (editor) and rita (reader), each holding embedding ``t1``;
- oscar is a user with nothing shared with him; the API standard ``unused`` is used by nothing;
- ``alice/inst`` points at a fake embedding provider on 127.0.0.1 (tests/fake_provider.py), with a key, so
  the rows marked ``provider`` really embed when they succeed (and the test checks a refused one called nothing).

Callers (columns): the admin key; alice ("owner" of everything the requests name; for UserService the
user herself); eddie ("editor": his share role on alice's project and instance; nothing on the definition,
which can only be shared read-only); rita ("reader"); oscar ("other user"); no key ("anonymous"); a key
that matches no user ("wrong key"); and no key on the public project ``alice/pub`` ("public project": the
same request aimed at ``alice/pub`` where it names a project, else the anonymous call again).

Every request names alice's resources explicitly (owner "alice"), so a cell answers "may this caller do this
to alice's resource?". Statuses are gRPC code names; OK means the call succeeded.

A row is one RPC, or one distinct case of an RPC (``case``: SearchSimilar by text follows other rules than
SearchSimilar by text_id or vector, so it has a row of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

CALLERS = ("admin", "owner", "editor", "reader", "other", "anonymous", "wrong_key", "public")
CALLER_TITLES = {
    "admin": "admin",
    "owner": "owner",
    "editor": "editor",
    "reader": "reader",
    "other": "other user",
    "anonymous": "no key",
    "wrong_key": "wrong key",
    "public": "no key, public project",
}

OK = "OK"
PD = "PERMISSION_DENIED"
UA = "UNAUTHENTICATED"


@dataclass(frozen=True)
class Row:
    """One RPC: what the request does, and the status per caller (``CALLERS`` order)."""

    method: str
    request: str
    statuses: tuple[str, ...]
    #: Which case of ``method`` the row is ("" = the RPC as a whole); names the row in ``BY_KEY``.
    case: str = ""
    #: A successful call embeds with alice/inst's provider (spending alice's provider quota).
    provider: bool = False

    @property
    def key(self) -> str:
        """``Service/Method``, or ``Service/Method (case)``."""
        return f"{self.method} ({self.case})" if self.case else self.method

    def expected(self, caller: str) -> str:
        return self.statuses[CALLERS.index(caller)]


def _row(method: str, request: str, *statuses: str, case: str = "", provider: bool = False) -> Row:
    assert len(statuses) == len(CALLERS), method
    return Row(method, request, statuses, case, provider)


#: Who may do what, by the rule each RPC follows (columns as ``CALLERS``).
ADMIN_ONLY = (OK, PD, PD, PD, PD, UA, UA, UA)
SELF_OR_ADMIN = (OK, OK, PD, PD, PD, UA, UA, UA)
ANYONE = (OK, OK, OK, OK, OK, OK, UA, OK)
ANY_USER = (OK, OK, OK, OK, OK, UA, UA, UA)
OWNER_OR_ADMIN = (OK, OK, PD, PD, PD, UA, UA, UA)
PROJECT_READ = (OK, OK, OK, OK, PD, UA, UA, OK)
PROJECT_WRITE = (OK, OK, OK, PD, PD, UA, UA, UA)
INSTANCE_READ = (OK, OK, OK, OK, PD, UA, UA, UA)
INSTANCE_WRITE = (OK, OK, OK, PD, PD, UA, UA, UA)
DEFINITION_READ = (OK, OK, PD, OK, PD, UA, UA, UA)
#: Project read, but never without a key: the call spends the project instance's provider quota
#: (domain/texts.py ``Texts.search`` refuses an anonymous caller first, public_read or not).
PROJECT_READ_WITH_KEY = (OK, OK, OK, OK, PD, UA, UA, UA)

TABLE: tuple[Row, ...] = (
    # UserService
    _row("UserService/CreateUser", "create user newbie", *ADMIN_ONLY),
    _row("UserService/GetUser", "read alice", *SELF_OR_ADMIN),
    _row("UserService/ListUsers", "list all users", *ADMIN_ONLY),
    _row("UserService/UpdateUser", "rename alice", *SELF_OR_ADMIN),
    _row("UserService/DeleteUser", "delete alice", *SELF_OR_ADMIN),
    _row("UserService/RotateUserKey", "rotate alice's key", *SELF_OR_ADMIN),
    # ApiStandardService
    _row("ApiStandardService/CreateApiStandard", "create a standard", *ADMIN_ONLY),
    _row("ApiStandardService/GetApiStandard", "read openai", *ANYONE),
    _row("ApiStandardService/ListApiStandards", "list standards", *ANYONE),
    _row("ApiStandardService/UpdateApiStandard", "change openai's description", *ADMIN_ONLY),
    _row("ApiStandardService/DeleteApiStandard", "delete unused", *ADMIN_ONLY),
    # ProjectService
    _row("ProjectService/CreateProject", "create alice/newp on alice/inst", *OWNER_OR_ADMIN),
    _row("ProjectService/GetProject", "read alice/proj", *PROJECT_READ),
    _row("ProjectService/ListProjects", "list own and public projects", *ANYONE),
    _row("ProjectService/UpdateProject", "change alice/proj's description", *OWNER_OR_ADMIN),
    _row("ProjectService/DeleteProject", "delete alice/proj", *OWNER_OR_ADMIN),
    _row("ProjectService/ShareProject", "share alice/proj with oscar", *OWNER_OR_ADMIN),
    _row("ProjectService/UnshareProject", "unshare alice/proj from rita", *OWNER_OR_ADMIN),
    _row("ProjectService/ListProjectShares", "list alice/proj's shares", *OWNER_OR_ADMIN),
    _row("ProjectService/TransferProject", "give alice/proj to eddie", *OWNER_OR_ADMIN),
    # EmbeddingService
    _row("EmbeddingService/UpsertEmbeddings", "upload t2 to alice/proj", *PROJECT_WRITE),
    _row("EmbeddingService/StreamUpsertEmbeddings", "stream t2 to alice/proj", *PROJECT_WRITE),
    _row("EmbeddingService/GetEmbedding", "read t1 of alice/proj", *PROJECT_READ),
    _row("EmbeddingService/ListEmbeddings", "list alice/proj", *PROJECT_READ),
    _row("EmbeddingService/DeleteEmbedding", "delete t1 of alice/proj", *PROJECT_WRITE),
    _row("EmbeddingService/DeleteAllEmbeddings", "empty alice/proj", *PROJECT_WRITE),
    _row("EmbeddingService/SearchSimilar", "search alice/proj like t1", *PROJECT_READ),
    _row(
        "EmbeddingService/SearchSimilar",
        "search alice/proj for a text (a key even on alice/pub: it spends alice's provider quota)",
        *PROJECT_READ_WITH_KEY,
        case="text",
        provider=True,
    ),
    # server-side embedding: EmbedTexts needs a role on the instance (any share role), not on a project
    _row("EmbeddingService/EmbedTexts", "embed a text with alice/inst", *INSTANCE_READ, provider=True),
    _row("EmbeddingService/UpsertTexts", "embed and store t2 in alice/proj", *PROJECT_WRITE, provider=True),
    _row("EmbeddingService/StreamUpsertTexts", "stream t2's text to alice/proj", *PROJECT_WRITE, provider=True),
    # LlmDefinitionService
    _row("LlmDefinitionService/CreateDefinition", "create alice/newd", *OWNER_OR_ADMIN),
    _row("LlmDefinitionService/GetDefinition", "read alice/defn", *DEFINITION_READ),
    _row("LlmDefinitionService/ListDefinitions", "list readable definitions", *ANY_USER),
    _row("LlmDefinitionService/UpdateDefinition", "change alice/defn's description", *OWNER_OR_ADMIN),
    _row("LlmDefinitionService/DeleteDefinition", "delete alice/defn", *OWNER_OR_ADMIN),
    _row("LlmDefinitionService/ShareDefinition", "share alice/defn with oscar", *OWNER_OR_ADMIN),
    _row("LlmDefinitionService/UnshareDefinition", "unshare alice/defn from rita", *OWNER_OR_ADMIN),
    _row("LlmDefinitionService/ListDefinitionShares", "list alice/defn's shares", *OWNER_OR_ADMIN),
    # LlmInstanceService
    _row("LlmInstanceService/CreateInstance", "create alice/newi", *OWNER_OR_ADMIN),
    _row("LlmInstanceService/CreateInstanceFromDefinition", "create alice/fromd from alice/defn", *OWNER_OR_ADMIN),
    _row("LlmInstanceService/GetInstance", "read alice/inst", *INSTANCE_READ),
    _row("LlmInstanceService/ListInstances", "list own and shared instances", *ANY_USER),
    _row("LlmInstanceService/UpdateInstance", "change alice/inst's description", *INSTANCE_WRITE),
    _row("LlmInstanceService/DeleteInstance", "delete alice/inst with force", *OWNER_OR_ADMIN),
    _row("LlmInstanceService/ShareInstance", "share alice/inst with oscar", *OWNER_OR_ADMIN),
    _row("LlmInstanceService/UnshareInstance", "unshare alice/inst from rita", *OWNER_OR_ADMIN),
    _row("LlmInstanceService/ListInstanceShares", "list alice/inst's shares", *OWNER_OR_ADMIN),
    # AdminService
    _row("AdminService/SanityCheck", "check the database", *ADMIN_ONLY),
    _row("AdminService/ResetDatabase", "delete every user's data", *ADMIN_ONLY),
    _row("AdminService/ReencryptApiKeys", "re-encrypt provider keys", *ADMIN_ONLY),
)

BY_KEY = {row.key: row for row in TABLE}
METHODS = {row.method for row in TABLE}
