"""`vdb-grpc import` / `export`: a project round-trips through a file; bad records are named by line; resume.

The transfer client is synchronous gRPC; it runs in a thread while the test's server runs on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedding_helpers import DIMS, make_world

from vdb_grpc import cli, transfer
from vdb_grpc.transfer import Progress, Target, TransferError


def records(n: int, *, start: int = 0, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        rec: dict[str, Any] = {"text_id": f"doc/{i:03d} ü", "vector": [float(x) for x in rng.normal(size=DIMS)]}
        if i % 3:
            rec["text"] = f"text {i}\nline two"
        if i % 4:
            rec["metadata"] = {"year": 1780 + i, "tags": ["a", "b"], "pub": {"city": "Riga", "ok": True}, "x": 0.5}
        out.append(rec)
    return out


def write_jsonl(path: Path, recs: list[Any], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in recs]
    for at, text in sorted((extra_lines or {}).items()):
        lines.insert(at - 1, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["text_id"]: r for r in rows}


def f16(v: list[float]) -> list[float]:
    return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32).tolist()


def assert_same_project(exported: dict[str, dict[str, Any]], original: list[dict[str, Any]]) -> None:
    assert set(exported) == {r["text_id"] for r in original}
    for r in original:
        got = exported[r["text_id"]]
        assert f16(got["vector"]) == f16(r["vector"]), r["text_id"]  # float16-equal: what the server stores
        assert got.get("text") == r.get("text")
        assert got.get("metadata") == r.get("metadata")


@pytest.fixture
async def world(vdb):
    return await make_world(vdb)


def target(world: Any, who: str = "alice") -> Target:
    return Target(server=f"127.0.0.1:{world.vdb.port}", key=world.keys[who])


async def test_jsonl_round_trip_between_projects(world, tmp_path):
    recs = records(50)
    src = write_jsonl(tmp_path / "in.jsonl", recs, {10: "", 20: "   "})  # blank lines are skipped
    result = await asyncio.to_thread(transfer.import_file, target(world), "alice/proj", src, batch_size=7)
    assert (result.committed, result.inserted, result.batches, result.bad) == (50, 50, 8, None)

    out = tmp_path / "out.jsonl"
    n = await asyncio.to_thread(transfer.export_project, target(world), "alice/proj", out)
    assert n == 50
    exported = read_jsonl(out)
    assert_same_project(exported, recs)
    assert isinstance(exported["doc/001 ü"]["metadata"]["year"], int)  # 1781, not 1781.0

    # the exported file is an import file: into another project, and out again unchanged
    again = await asyncio.to_thread(transfer.import_file, target(world), "alice/pub", out)
    assert again.committed == 50
    out2 = tmp_path / "out2.jsonl"
    await asyncio.to_thread(transfer.export_project, target(world), "alice/pub", out2)
    assert read_jsonl(out2) == exported


async def test_parquet_round_trip(world, tmp_path):
    pytest.importorskip("pyarrow")
    recs = records(30)
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    await asyncio.to_thread(transfer.import_file, target(world), "alice/proj", src)
    pq_out = tmp_path / "proj.parquet"
    assert await asyncio.to_thread(transfer.export_project, target(world), "alice/proj", pq_out) == 30
    result = await asyncio.to_thread(transfer.import_file, target(world), "alice/pub", pq_out)
    assert result.committed == 30
    out = tmp_path / "pub.jsonl"
    await asyncio.to_thread(transfer.export_project, target(world), "alice/pub", out)
    assert_same_project(read_jsonl(out), recs)


async def test_bad_records_are_named_by_line_and_nothing_after_is_sent(world, tmp_path):
    recs = records(8)
    bad_dims = dict(recs[5], vector=[1.0, 2.0])
    nan = '{"text_id": "n", "vector": [NaN, 1, 2, 3]}'
    src = write_jsonl(tmp_path / "bad.jsonl", [*recs[:5], bad_dims, *recs[6:]], {3: "{not json", 9: nan})
    good, bad, n_bad = transfer.check_file(src)
    assert (good, n_bad) == (7, 3)
    assert [b.line for b in bad] == [3, 7, 9]
    assert "not valid JSON" in bad[0].problem
    assert "vector has 2 values" in bad[1].problem and "doc/005" in bad[1].problem
    assert "not valid JSON" in bad[2].problem  # NaN is no JSON

    result = await asyncio.to_thread(transfer.import_file, target(world), "alice/proj", src, batch_size=1)
    assert result.bad is not None and result.bad.line == 3
    assert result.committed == 2  # lines 1 and 2; line 3 and everything after it not sent
    assert set((await world.rows("proj")).keys()) == {recs[0]["text_id"], recs[1]["text_id"]}

    lines: list[str] = []
    assert transfer.report_import(result, src, lines.append) == 1
    assert f"{src}:3:" in lines[1] and "--resume" in lines[1]


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([1, 2], "expected a JSON object"),
        ({"text_id": "a", "vector": [1.0], "txt": "typo"}, "unknown field(s) txt"),
        ({"vector": [1.0]}, "text_id is missing"),
        ({"text_id": "a" * 1001, "vector": [1.0]}, "longer than 1000"),
        ({"text_id": "a", "vector": []}, "vector is missing"),
        ({"text_id": "a", "vector": [1.0, "x"]}, "not a number"),
        ({"text_id": "a", "vector": [True]}, "not a number"),
        ({"text_id": "a", "vector": [70000.0]}, "65504"),
        ({"text_id": "a", "vector": [0.0, 1e-9]}, "all zeros"),
        ({"text_id": "a", "vector": [1.0], "text": 5}, "text is not a string"),
        ({"text_id": "a", "vector": [1.0], "metadata": [1]}, "metadata is not a JSON object"),
    ],
)
def test_record_checks(obj, problem):
    got = transfer.check_record(obj, 4, None)
    assert isinstance(got, transfer.BadRecord) and got.line == 4
    assert problem in got.problem


async def test_server_refusal_names_the_line_and_what_was_committed(world, tmp_path):
    recs = [dict(r, metadata={"year": 1800 + i}) for i, r in enumerate(records(6))]
    recs[4]["metadata"] = {"year": "1804"}  # the schema wants an integer: only the server knows
    src = write_jsonl(tmp_path / "schema.jsonl", recs)
    with pytest.raises(TransferError) as info:
        await asyncio.to_thread(transfer.import_file, target(world), "alice/schema", src, batch_size=2)
    msg = str(info.value)
    assert msg.startswith(f"{src}:5: ") and "INVALID_ARGUMENT" in msg and "metadata_schema" in msg
    assert "4 embeddings were committed before it" in msg
    assert await world.count("schema") == 4


async def test_resume_skips_what_the_server_has(world, tmp_path):
    recs = records(40)
    # an import interrupted after 25 records (here: a bad line 26, as if the file had been cut there)
    cut = write_jsonl(tmp_path / "cut.jsonl", [*recs[:25], {"text_id": "broken"}, *recs[26:]])
    first = await asyncio.to_thread(transfer.import_file, target(world), "alice/proj", cut, batch_size=10)
    assert first.committed == 25 and first.bad is not None and first.bad.line == 26
    full = write_jsonl(tmp_path / "full.jsonl", recs)
    second = await asyncio.to_thread(
        transfer.import_file, target(world), "alice/proj", full, batch_size=10, resume=True
    )
    assert (second.skipped, second.committed, second.inserted, second.replaced) == (25, 15, 15, 0)
    assert await world.count("proj") == 40


async def test_permission_and_project_errors_are_clear(world, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", records(3))
    with pytest.raises(TransferError, match="PERMISSION_DENIED"):
        await asyncio.to_thread(transfer.import_file, target(world, "rita"), "alice/proj", src)  # a reader
    with pytest.raises(TransferError, match="owner/project_handle"):
        await asyncio.to_thread(transfer.import_file, target(world), "proj", src)
    with pytest.raises(TransferError, match="cannot read project alice/nope: NOT_FOUND"):
        await asyncio.to_thread(transfer.export_project, target(world), "alice/nope", tmp_path / "x.jsonl")
    assert await world.count("proj") == 0
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        nobody = Target(server=f"127.0.0.1:{closed.getsockname()[1]}", key="k")
        for resume in (False, True):
            with pytest.raises(TransferError, match=r"cannot (reach the server|list alice/proj on 127\.0\.0\.1:\d+): "):
                await asyncio.to_thread(transfer.import_file, nobody, "alice/proj", src, resume=resume)


async def test_cli_import_and_export_with_key_from_env(world, tmp_path, monkeypatch, capsys):
    recs = records(12)
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    monkeypatch.setenv("VDB_API_KEY", world.keys["alice"])
    server = f"127.0.0.1:{world.vdb.port}"
    code = await asyncio.to_thread(cli.main, ["import", str(src), "--project", "alice/proj", "--server", server])
    assert code == 0
    err = capsys.readouterr().err
    assert "imported 12 embeddings (12 new, 0 replaced)" in err
    assert "done: " in err and "rows/s" in err  # plain progress lines when stderr is not a terminal
    out = tmp_path / "out.jsonl"
    code = await asyncio.to_thread(
        cli.main, ["export", "--project", "alice/proj", "--server", server, "-o", str(out), "--quiet"]
    )
    assert code == 0 and "exported 12 embeddings" in capsys.readouterr().err
    assert_same_project(read_jsonl(out), recs)

    bad = write_jsonl(tmp_path / "bad.jsonl", [*recs[:2], {"text_id": "x", "vector": "no"}])
    assert await asyncio.to_thread(cli.main, ["import", str(bad), "--project", "alice/proj", "--check"]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:3: text_id 'x': vector is missing" in captured.err
    assert "2 good records, 1 bad; nothing was sent" in captured.out


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    tty = io.StringIO()
    p = Progress(1000, "rows", tty, tty=True)
    p.every = 0.0
    p.update(250, 250)
    p.update(1000, 1000, final=True)
    assert "\r|██████" in tty.getvalue() and "ETA" in tty.getvalue() and "rows/s" in tty.getvalue()
    plain = io.StringIO()
    q = Progress(1000, "rows", plain, tty=False)
    q.every = 0.0
    q.update(500, 500)
    q.update(1000, 1000, final=True)
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith(" 50% 500 rows") and "ETA" in lines[0] and "\r" not in plain.getvalue()
    assert lines[1].startswith("done: 100% 1,000 rows")
