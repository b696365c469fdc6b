"""The team set-up of docs/deploy.md, replayed command by command in a clean shell, as a new platform engineer follows it.

Sections 1 (PostgreSQL and the Prefect server), 2 (`genforge deploy`) and 4 (a worker, a
quick deployment run, an offline sweep) are read from the docs and run by ``bash -e`` with
an empty environment apart from PATH (the project's virtual environment first, as after
``source .venv/bin/activate``) and a fresh HOME. Only what a test must change is changed:
``SERVER``, the PostgreSQL folder and the two ports; long-running commands (the server, the
worker) go to the background with their PIDs recorded (the Docker and Kubernetes pools are
created too: that needs no engine or cluster). The README's team block must be commands of
the replayed sections. Then every flow run must complete, and everything started is stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
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


def test_readme_team_block_is_commands_of_the_docs():
    docs = bash_blocks((ROOT / "docs" / "deploy.md").read_text(), SECTIONS)
    readme = (ROOT / "README.md").read_text()
    team = readme.split("## For a team", 1)[1]
    block = bash_blocks(team.split("\n## ", 1)[0])
    assert block and [c for c in block if c not in docs] == []


def replay_script(commands: list[str], base: Path, pg_port: int, api_port: int) -> str:
    lines = ["set -ex"]
    for cmd in commands:
        cmd = re.sub(r"\bSERVER\b", "127.0.0.1", cmd).replace("/srv/genforge/pg", str(base / "pg"))
        cmd = cmd.replace(" 5432", f" {pg_port}").replace(":4200", f":{api_port}").replace("--port 4200", f"--port {api_port}")
        if cmd.startswith("prefect server start"):
            lines += [
                f"setsid {cmd} > {base}/server.log 2>&1 & echo $! >> {base}/pids",
                f"{sys.executable} -c 'import sys; sys.path.insert(0, \"{ROOT / 'tests'}\"); from helpers.services import wait_http; "
                f"wait_http(\"http://127.0.0.1:{api_port}/api/health\", 180)'",
            ]
        elif cmd.endswith("&"):
            name = re.sub(r"\W+", "-", cmd.rstrip("& "))[:40]
            lines.append(f"setsid {cmd.rstrip('& ')} > {base}/{name}.log 2>&1 & echo $! >> {base}/pids")
        else:
            lines.append(cmd)
    return "\n".join(lines) + "\n"


@pytest.fixture
def replay_dir():
    base = Path(tempfile.mkdtemp(prefix="genforge-team-docs-"))
    base.chmod(0o755)  # the postgres user enters it to reach pg/
    yield base
    for pid in (int(p) for p in (base / "pids").read_text().split()) if (base / "pids").exists() else []:
        try:
            os.killpg(pid, signal.SIGKILL)  # the server and the worker, with their children
        except ProcessLookupError:
            pass
    if (base / "api").exists():  # the flow-run processes of this server only
        services.kill_pids(services.flow_run_processes(api_url=(base / "api").read_text()))
    data = base / "pg" / "data"
    if data.exists():
        subprocess.run(services._as_postgres([services.pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        assert not (data / "postmaster.pid").exists(), "PostgreSQL did not stop"
    shutil.rmtree(base, ignore_errors=True)


def test_the_team_setup_runs_as_written(replay_dir):
    if not shutil.which("initdb") and not Path("/usr/lib/postgresql").exists():
        pytest.skip("PostgreSQL's server programs are not installed")
    commands = bash_blocks((ROOT / "docs" / "deploy.md").read_text(), SECTIONS)
    pg_port, api_port = services.free_port(), services.free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    (replay_dir / "api").write_text(api)
    script = replay_dir / "replay.sh"
    script.write_text(replay_script(commands, replay_dir, pg_port, api_port))
    (replay_dir / "home").mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(replay_dir / "home"),
        "LANG": "C.UTF-8",
    }
    out = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"the docs' commands failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    assert "Password:" not in out.stdout + out.stderr  # nothing waited at a prompt

    # What the commands started must now finish: the quick try, the sweep and its two children.
    # (Prefect's settings were loaded when an earlier test imported it: this server's address goes in explicitly.)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 1200
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        ours = {client.read_deployment_by_name(n).id for n in ("genforge-pipeline/molecule-diffusion-cpu", "genforge-sweep/molecule-diffusion-sweep")}
        while True:  # (the scheduled deployments' future runs are not the docs' to wait for)
            runs = [r for r in client.read_flow_runs() if r.deployment_id in ours]
            if len(runs) >= 4 and all(r.state and r.state.is_final() for r in runs):
                break
            assert time.monotonic() < deadline, [(r.name, r.state.name if r.state else None) for r in runs]
            time.sleep(5)
    states = sorted((r.name, r.state.name) for r in runs)
    names = [n for n, _ in states]
    assert all(s == "Completed" for _, s in states), states
    assert "molecule-diffusion-seed0" in names and "molecule-diffusion-seed1" in names and "sweep-genforge-pipeline/molecule-diffusion-cpu" in names
    assert (replay_dir / "home" / ".genforge" / "runs").exists()  # the worker's default store, under the fresh HOME
