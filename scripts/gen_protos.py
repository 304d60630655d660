#!/usr/bin/env python3
"""Regenerate the committed protobuf/gRPC Python code in src/vdb_grpc/v1 from protos/.

    python scripts/gen_protos.py          # rewrite src/vdb_grpc/v1
    python scripts/gen_protos.py --check  # exit 1 when the committed code differs from what protos/ produce

The generator is grpcio-tools (pinned in pyproject.toml's test extra); the same version must be used by everyone,
or --check reports a difference.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = ROOT / "src"
GENERATED = OUT_PACKAGE / "vdb_grpc" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", ".binpb")
#: Descriptor set with comments (source info) served by reflection, so `grpcurl describe` shows the docs.
DESCRIPTOR_SET = "descriptor_set.binpb"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto under protos/, writing into ``out_dir``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc  # imported lazily so --help works without grpcio-tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under protos/")
    (out_dir / "vdb_grpc" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out_dir / 'vdb_grpc' / 'v1' / DESCRIPTOR_SET}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    gen_dir = out_dir / "vdb_grpc" / "v1"
    (gen_dir / "__init__.py").write_text(
        '"""Generated protobuf and gRPC code; do not edit (scripts/gen_protos.py)."""\n'
    )
    return sorted(p for p in gen_dir.iterdir() if p.is_file())


def _generated_files(directory: Path) -> set[str]:
    return {
        p.name for p in directory.iterdir() if p.is_file() and (p.name.endswith(SUFFIXES) or p.name == "__init__.py")
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "vdb_grpc" / "v1"
        want, have = _generated_files(fresh), _generated_files(GENERATED) if GENERATED.is_dir() else set()
        problems = [f"missing: {n}" for n in sorted(want - have)] + [f"stale: {n}" for n in sorted(have - want)]
        problems += [
            f"differs: {n}" for n in sorted(want & have) if not filecmp.cmp(fresh / n, GENERATED / n, shallow=False)
        ]
    if problems:
        print("src/vdb_grpc/v1 is out of date with protos/ — run: python scripts/gen_protos.py")
        print("\n".join(problems))
        return 1
    print("generated code is up to date")
    return 0


def write() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        if GENERATED.is_dir():
            for old in GENERATED.iterdir():
                if old.is_file() and (old.name.endswith(SUFFIXES) or old.name == "__init__.py"):
                    old.unlink()
        GENERATED.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, GENERATED / f.name)
    print(f"wrote {len(files)} files to {GENERATED.relative_to(ROOT)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the committed code differs from protos/")
    args = parser.parse_args()
    return check() if args.check else write()


if __name__ == "__main__":
    sys.exit(main())
