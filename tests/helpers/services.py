"""Real services for the end-to-end tests: PostgreSQL 15, a Prefect server on it, process workers.

Everything started here is stopped by PID (process group) and checked to be gone.
PostgreSQL refuses to run as root: under root its commands run as the ``postgres`` user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql-15)")
    return str(found)


class Postgres:
    """Started by deploy/postgres-local.sh, the script docs/deploy.md tells a team to run: password auth, loopback only."""

    def __init__(self):
        # Its own folder under /tmp: the postgres user cannot enter pytest's (mode 700) folders.
        parent = Path(tempfile.mkdtemp(prefix="genforge-pg-"))
        parent.chmod(0o755)
        self.dir = parent / "pg"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.url = f"postgresql+asyncpg://prefect:{self.password}@127.0.0.1:{self.port}/prefect"

    def start(self) -> Postgres:
        script = Path(__file__).resolve().parents[2] / "deploy" / "postgres-local.sh"
        out = subprocess.run(
            ["bash", str(script), str(self.dir), str(self.port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "POSTGRES_PASSWORD": self.password},
        )
        if out.returncode:
            raise RuntimeError(f"{script} failed: {out.stdout}{out.stderr}")
        assert "PREFECT_API_DATABASE_CONNECTION_URL" in out.stdout and self.password not in out.stdout
        return self

    def stop(self) -> None:
        subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]), capture_output=True)
        pid_file = self.dir / "data" / "postmaster.pid"
        assert not pid_file.exists(), "PostgreSQL did not stop"
        shutil.rmtree(self.dir.parent, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A background process in its own process group (so that it and its children can be stopped)."""
    fh = open(log, "ab")
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGKILL the process group (a worker ignores SIGINT and can hang on SIGTERM) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=timeout)
    assert proc.poll() is not None


def flow_run_processes(flow_run_id: str | None = None, api_url: str | None = None) -> list[int]:
    """PIDs of flow-run processes (``python -m prefect.engine``) for one flow run, or all of one server's."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"prefect.engine" not in cmd:
                continue
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if flow_run_id and env.get("PREFECT__FLOW_RUN_ID") != flow_run_id:
            continue
        if api_url and env.get("PREFECT_API_URL") != api_url:
            continue
        found.append(int(proc.name))
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids):
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (OSError, IndexError):
        return "X"
