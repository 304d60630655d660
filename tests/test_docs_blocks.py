"""Every ```bash block of every docs/*.md file runs as printed; links between the docs resolve.

One shell per file (its blocks in order, bash -euo pipefail) against a fresh server on a fresh migrated
database, in a temporary directory, with the README tour's substitutions: the test's port for
127.0.0.1:50051 and the test's data dir for `vdb-data` (which holds `admin_key` and `encryption_key`, as in
embedded mode). grpcurl and vdb-grpc are on the PATH. ```sh blocks are shown, not run.

The server is built in-process by `server.build_server` (the `vdb` fixture) rather than started as
`vdb-grpc serve`: a fresh database from the migrated template takes a fraction of a second, an embedded
cluster ~10 s per file. The README tour (tests/test_readme_tour.py) covers the real `serve` in embedded mode.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from harness import ADMIN_KEY, ENCRYPTION_KEY
from test_readme_tour import bash_blocks, files_holding_a_key, run_script, shell_script

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
WITH_BLOCKS = [p for p in DOCS if bash_blocks(p.read_text(encoding="utf-8"))]
#: Files other branches add (the lead merges them); a link to one of them may dangle until then.
PENDING = {
    "docs/limits.md", "docs/reliability.md", "docs/permissions.md", "docs/server-side-embedding.md",
    "docs/operations.md", "docs/resilience.md", "docs/search.md", "docs/benchmarks.md",
}  # fmt: skip


#: Docs whose blocks call a local Ollama at its default address: the test runs them against a fake Ollama
#: (tests/fake_provider.py) on a free port, with the server allowing loopback endpoints (VDB_PROVIDER_ALLOW).
OLLAMA = "127.0.0.1:11434"
WITH_OLLAMA = {"server-side-embedding.md"}


@pytest.fixture
def server_settings(server_settings, request):  # type: ignore[no-untyped-def]
    """The default test server; for WITH_OLLAMA docs it may call providers on 127.0.0.1."""
    doc = getattr(request.node, "callspec", None) and request.node.callspec.params.get("doc")
    if doc is not None and doc.name in WITH_OLLAMA:
        return server_settings.replace(provider_allow=("127.0.0.1",))
    return server_settings


@pytest.fixture
def fake_ollama():
    from fake_provider import FakeProvider

    fake = FakeProvider(dims=768).start()
    yield fake
    fake.stop()


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="vdbd-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("doc", WITH_BLOCKS, ids=[p.name for p in WITH_BLOCKS])
async def test_bash_blocks_run_as_printed(doc, vdb, workdir, request):
    data_dir = workdir / "vdb-data"
    data_dir.mkdir()
    for name, secret in (("admin_key", ADMIN_KEY), ("encryption_key", ENCRYPTION_KEY)):
        (data_dir / name).write_text(secret + "\n")
        (data_dir / name).chmod(0o600)
    script = shell_script(doc.read_text(encoding="utf-8"), vdb.port, data_dir)
    if doc.name in WITH_OLLAMA:
        fake = request.getfixturevalue("fake_ollama")
        assert OLLAMA in script
        script = script.replace(OLLAMA, f"127.0.0.1:{fake.port}")
    out = await asyncio.to_thread(run_script, script, workdir)
    assert out.returncode == 0, f"{doc.name} failed:\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
    # nothing holding a key is left where the blocks ran (vdb-data is the server's)
    assert files_holding_a_key(workdir, skip=("vdb-data", ".venv")) == []


def test_blocks_are_bash_or_sh_or_shown_output():
    """A shell block in another fence (```shell, ```console) would silently escape the test."""
    for doc in [*DOCS, ROOT / "README.md"]:
        fences = re.findall(r"^```(\w*)$", doc.read_text(encoding="utf-8"), re.M)
        openers = fences[0::2]
        assert set(openers) <= {"bash", "sh", "text", "python", "json", "yaml", "proto", ""}, (doc.name, openers)
        assert "" not in openers, f"{doc.name}: name the language of every block (bash runs, sh and text do not)"


def test_links_between_docs_resolve():
    missing = set()
    for doc in [*DOCS, ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if re.match(r"\w+:", target):
                continue
            path = (doc.parent / target).resolve()
            if not path.exists():
                missing.add(str(path.relative_to(ROOT)))
    assert missing - PENDING == set()


def test_every_setting_of_template_env_is_in_the_configuration_table():
    template = (ROOT / "template.env").read_text(encoding="utf-8")
    settings = re.findall(r"^([A-Z][A-Z0-9_]+)=", template, re.M)
    table = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert settings and [s for s in settings if f"`{s}`" not in table] == []
