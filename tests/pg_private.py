"""A private, throw-away PostgreSQL cluster for tests that kill the server itself.

The shared server (``MICROPAY_TEST_PG``) is used by other tests and by CI and
must never be killed. A test that crashes PostgreSQL starts its own cluster
instead: ``initdb`` into a fresh temporary directory, ``postgres`` on a free
port of 127.0.0.1, trust authentication, and the durable settings micropay
requires (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on).

The binaries are found through ``MICROPAY_PG_BINDIR``, ``pg_config --bindir``,
the usual installation directories, or ``PATH``. Without them the test is
skipped with a message, except in CI (``CI`` set), where it fails, like
``require_pg()`` in ``conftest.py``. ``initdb`` and ``postgres`` refuse to run
as root: as root they run as the ``postgres`` OS user, which owns the
temporary directory.

:meth:`PrivateCluster.kill9` is the crash: the postmaster is frozen
(SIGSTOP, so it cannot fork), its children are listed, then all of them get
SIGKILL at once and are waited for. :meth:`PrivateCluster.close` always stops
every process and deletes the directory. Process listing reads ``/proc``
(Linux).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import psycopg
import pytest

BINDIR_ENV = "MICROPAY_PG_BINDIR"
BINDIR_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/bin")
OS_USER = "postgres"  # the user initdb/postgres run as when the tests run as root
DB_USER = "postgres"
DATABASE = "micropay"
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "shared_buffers": "32MB",
    "max_connections": "40",
}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3
RECOVERY_MESSAGE = "automatic recovery in progress"


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in Path(path).parent.name.split(".") if part.isdigit())


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or ``None``."""
    candidates: list[str] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(os.environ[BINDIR_ENV])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    for pattern in BINDIR_GLOBS:
        candidates += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        if candidate and _has_server(Path(candidate)):
            return Path(candidate)
    return None


def _os_user() -> pwd.struct_passwd | None:
    """The account to run the server as: ``None`` means this process's own."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        return _unavailable(f"running as root and there is no {OS_USER!r} OS user to run it as")


def _unavailable(reason: str) -> NoReturn:
    message = f"cannot start a private PostgreSQL cluster: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run the PostgreSQL server crash test", pytrace=False)
    pytest.skip(message)


def require_private_pg() -> PrivateCluster:
    """A new, not yet started cluster; skips (fails in CI) when PostgreSQL cannot run here."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            f"no initdb/postgres found (pg_config --bindir, {', '.join(BINDIR_GLOBS)}, PATH);"
            f" set {BINDIR_ENV}"
        )
    if not Path("/proc/self/stat").exists():
        _unavailable("the server's processes are found through /proc, which is missing")
    return PrivateCluster(bindir, _os_user())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, ``None`` once it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return None if state in "ZX" else (state, int(ppid))


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = [p for p in pids if _stat(p) is not None]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if _stat(p) is not None]
    return alive


class PrivateCluster:
    """One PostgreSQL cluster in a temporary directory; a context manager."""

    def __init__(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.user = user
        self.root = Path(tempfile.mkdtemp(prefix="micropay-pg-"))
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_processes = 0

    def __enter__(self) -> PrivateCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(graceful=kind is None)

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def recoveries(self) -> int:
        """How many times the server has started with crash recovery, from its log."""
        return self.log_text().count(RECOVERY_MESSAGE)

    @property
    def _uid(self) -> int | None:
        return None if self.user is None else self.user.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self.user is None else self.user.pw_gid

    @property
    def _groups(self) -> list[int] | None:
        return None if self.user is None else []

    def init(self) -> None:
        """``initdb`` (trust auth) and create the database."""
        result = subprocess.run(
            [self.bindir / "initdb", "-D", self.data, "-U", DB_USER, "-A", "trust", "-E", "UTF8"],
            capture_output=True,
            cwd=self.root,
            timeout=120,
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections (crash recovery included)."""
        assert self.proc is None, "already running"
        for _ in range(PORT_ATTEMPTS):
            before = len(self.log_text())
            options = [f"-c{k}={v}" for k, v in {**SETTINGS, "port": self.port}.items()]
            options.append(f"-cunix_socket_directories={self.root}")
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.bindir / "postgres", "-D", self.data, *options],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    start_new_session=True,
                    user=self._uid,
                    group=self._gid,
                    extra_groups=self._groups,
                )
            if self._wait_ready():
                return
            if self.proc is not None:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                self.proc = None
            if "Address already in use" not in self.log_text()[before:]:
                break
            self.port = free_port()  # taken meanwhile by someone else: try another
        raise AssertionError(f"the private PostgreSQL did not start:\n{self.log_text()[-3000:]}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        if self.proc.poll() is None:  # hung: not ours to wait for any longer
            self.kill9()
        return False

    def kill9(self) -> int:
        """SIGKILL the postmaster and all its children at once; returns how many died."""
        assert self.proc is not None, "not running"
        pid = self.proc.pid
        victims = [pid]
        try:
            os.kill(pid, signal.SIGSTOP)  # frozen, it cannot fork while its children are listed
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while (stat := _stat(pid)) is not None and stat[0] != "T":
                assert time.monotonic() < deadline, f"postmaster {pid} does not stop"
                time.sleep(0.001)
            victims += children(pid)
        finally:
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            self.proc = None
        alive = _wait_gone(victims, STOP_TIMEOUT_S)
        assert not alive, f"postgres processes survived SIGKILL: {alive}"
        self.killed_processes += len(victims)
        return len(victims)

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL if it does not finish in time."""
        if self.proc is None:
            return
        pid = self.proc.pid
        spawned = children(pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill9()
            return
        self.proc = None
        alive = _wait_gone(spawned, STOP_TIMEOUT_S)
        for victim in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        assert not _wait_gone(alive, STOP_TIMEOUT_S), f"postgres processes left: {alive}"

    def close(self, *, graceful: bool = True) -> None:
        """Stop every server process (graceful or not) and delete the directory."""
        try:
            if self.proc is not None:
                if graceful:
                    self.stop()
                else:
                    self.kill9()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
