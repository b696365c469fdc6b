"""One team's stack for the end-to-end tests: docs/deploy.md's sections 1, 2 and 4 replayed, command by command, in a clean shell.

A new platform engineer follows the docs: PostgreSQL 15 and `prefect server` on it (section 1),
`genforge deploy` (section 2), a CPU worker, a quick deployment run, an offline sweep and the
schedule listing (section 4). The commands run by ``bash -e`` with an empty environment apart
from PATH (the project's virtual environment first, as after ``source .venv/bin/activate``), a
fresh HOME and C.UTF-8. Only what a test must change is changed: ``SERVER``, the PostgreSQL folder
and the two ports; long-running commands (the server, the worker) go to the background with their
PIDs recorded. Everything started is stopped by PID and checked gone.

The session's e2e modules share it: tests/test_team_docs.py checks that what the docs started
completes; tests/test_deploy_e2e.py drives the same server with its own GPU-pool worker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers import services

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("## 1.", "## 2.", "## 4.")


def bash_blocks(markdown: str, headings: tuple[str, ...] | None = None) -> list[str]:
    """The commands of the ```bash blocks (under the given headings): continuation lines joined, comments dropped."""
    commands, heading = [], ""
    for part in re.split(r"^(```bash\n.*?^```)$", markdown, flags=re.S | re.M):
        if not part.startswith("```bash"):
            found = re.findall(r"^## .*$", part, flags=re.M)
            heading = found[-1] if found else heading
            continue
        if headings and not heading.startswith(headings):
            continue
        body = part.split("\n", 1)[1].rsplit("```", 1)[0].replace("\\\n", " ")
        for line in body.splitlines():
            line = re.sub(r"\s+", " ", without_comment(line)).strip()
            if line:
                commands.append(line)
    return commands


def without_comment(line: str) -> str:
    """The line up to a ``#`` that starts a shell comment (not one inside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def replay_script(commands: list[str], base: Path, pg_port: int, api_port: int) -> str:
    lines = ["set -ex"]
    for cmd in commands:
        cmd = re.sub(r"\bSERVER\b", "127.0.0.1", cmd).replace("/srv/genforge/pg", str(base / "pg"))
        cmd = cmd.replace(" 5432", f" {pg_port}").replace(":4200", f":{api_port}").replace("--port 4200", f"--port {api_port}")
        if cmd.startswith("prefect server start"):
            lines += [
                f"setsid {cmd} > {base}/server.log 2>&1 & echo $! >> {base}/pids",
                f'{sys.executable} -c \'import sys; sys.path.insert(0, "{ROOT / "tests"}"); from helpers.services import wait_http; '
                f'wait_http("http://127.0.0.1:{api_port}/api/health", 180)\'',
            ]
        elif cmd.endswith("&"):
            name = re.sub(r"\W+", "-", cmd.rstrip("& "))[:40]
            lines.append(f"setsid {cmd.rstrip('& ')} > {base}/{name}.log 2>&1 & echo $! >> {base}/pids")
        else:
            lines.append(cmd)
    return "\n".join(lines) + "\n"


@dataclass
class Team:
    """The replayed stack: its folder, the server's API, the HOME the docs' commands ran with (its store), clients' env."""

    base: Path
    api: str
    port: int
    home: Path
    output: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.home / ".genforge"  # the workers' default run store under the fresh HOME

    @property
    def env(self) -> dict[str, str]:
        """What a client or an extra worker of this team needs (the docs' exports, and quick polling)."""
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

    def worker(self, *args: str) -> subprocess.Popen:
        """Another worker of the team (``genforge worker ARGS``), stopped with the stack."""
        proc = services.start([str(services.BIN / "genforge"), "worker", *args], self.env, self.base / f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def run_dir(self, flow_run_id) -> Path | None:
        found = list((self.store / "runs").glob(f"*-{flow_run_id.hex[:8]}"))
        return found[0] if found else None

    def stop(self) -> None:
        """Stop everything this stack started, each part even when an earlier part failed to stop; then raise the first failure."""
        failures: list[BaseException] = []

        def attempt(part, *args) -> None:
            try:
                part(*args)
            except Exception as exc:
                failures.append(exc)

        for w in self.workers:
            attempt(services.stop, w)
        pids = (self.base / "pids").read_text().split() if (self.base / "pids").exists() else []
        for pid in map(int, pids):
            try:
                os.killpg(pid, signal.SIGKILL)  # the server and the docs' worker, with their children
            except ProcessLookupError:
                pass
        attempt(lambda: services.kill_pids(services.flow_run_processes(api_url=self.api)))
        data = self.base / "pg" / "data"

        def stop_postgres() -> None:
            pg_ctl = services._as_postgres([services.pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
            subprocess.run(pg_ctl, capture_output=True)
            assert not (data / "postmaster.pid").exists(), "PostgreSQL did not stop"

        if data.exists():
            attempt(stop_postgres)

        def none_left() -> None:
            assert not services.flow_run_processes(api_url=self.api)

        attempt(none_left)
        shutil.rmtree(self.base, ignore_errors=True)
        if failures:
            raise failures[0]


def bring_up() -> Team:
    """Replay the docs' sections 1, 2 and 4; returns the stack once the commands have run (the runs they started go on)."""
    base = Path(tempfile.mkdtemp(prefix="genforge-team-"))
    base.chmod(0o755)  # the postgres user enters it to reach pg/
    pg_port, api_port = services.free_port(), services.free_port()
    team = Team(base, f"http://127.0.0.1:{api_port}/api", api_port, base / "home")
    team.home.mkdir()
    commands = bash_blocks((ROOT / "docs" / "deploy.md").read_text(), SECTIONS)
    script = base / "replay.sh"
    script.write_text(replay_script(commands, base, pg_port, api_port))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(team.home), "LANG": "C.UTF-8"}
    try:
        out = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        team.output = out.stdout + out.stderr
        if out.returncode:
            raise AssertionError(f"the docs' commands failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
        assert "Password:" not in team.output  # nothing waited at a prompt
    except BaseException:
        team.stop()
        raise
    return team


def postgres_installed() -> bool:
    return bool(shutil.which("initdb")) or Path("/usr/lib/postgresql").exists()
