"""The team set-up of docs/deploy.md, as a new platform engineer follows it: what its commands started must complete.

The commands of sections 1, 2 and 4 are replayed in a clean shell by the session's ``team`` fixture
(tests/helpers/team.py), which tests/test_deploy_e2e.py shares. Here: the README's team block is
commands of those sections, and the quick try, the sweep and its two children complete.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.team import SECTIONS, bash_blocks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]  # one xdist worker: tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]


def test_readme_team_block_is_commands_of_the_docs():
    docs = bash_blocks((ROOT / "docs" / "deploy.md").read_text(), SECTIONS)
    readme = (ROOT / "README.md").read_text()
    team = readme.split("## For a team", 1)[1]
    block = bash_blocks(team.split("\n## ", 1)[0])
    assert block and [c for c in block if c not in docs] == []


def test_the_team_setup_runs_as_written(team):
    """The docs' quick try, their sweep and its two children (found by their parent: tests/test_deploy_e2e.py's runs of the
    same deployments are not the docs') all complete."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 1200
    with temporary_settings(updates={PREFECT_API_URL: team.api}), get_client(sync_client=True) as client:
        quick = client.read_deployment_by_name("genforge-pipeline/molecule-diffusion-cpu").id
        sweeps = client.read_deployment_by_name("genforge-sweep/molecule-diffusion-sweep").id
        while True:  # (the scheduled deployments' future runs are not the docs' to wait for)
            runs = client.read_flow_runs()
            docs_sweep = [r for r in runs if r.deployment_id == sweeps and "e2e" not in r.tags]
            children = (
                client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(operator="and_", any_=[r.id for r in docs_sweep])
                    )
                )
                if docs_sweep
                else []
            )
            tries = [r for r in runs if r.deployment_id == quick and r.parent_task_run_id is None and "e2e" not in r.tags]
            ours = [*tries, *docs_sweep, *children]
            if len(ours) >= 4 and all(r.state and r.state.is_final() for r in ours):
                break
            assert time.monotonic() < deadline, [(r.name, r.state.name if r.state else None) for r in ours]
            time.sleep(3)
    states = sorted((r.name, r.state.name) for r in ours)
    names = [n for n, _ in states]
    assert len(tries) == 1 and len(docs_sweep) == 1 and len(children) == 2, states
    assert all(s == "Completed" for _, s in states), states
    assert (
        "molecule-diffusion-seed0" in names
        and "molecule-diffusion-seed1" in names
        and "sweep-genforge-pipeline/molecule-diffusion-cpu" in names
    )
    assert team.store.joinpath("runs").exists()  # the worker's default store, under the fresh HOME
