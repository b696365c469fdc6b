"""Shared fixtures. Each test session gets its own GENFORGE_HOME and PREFECT_HOME."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

# Under pytest-xdist (`make test`: two workers on two cores) each worker computes on one thread: two
# workers with two OpenMP threads each would spin against each other (torch, numpy's BLAS, RDKit pools).
# The variables reach the processes the tests start and libraries loaded later; threadpoolctl limits the
# BLAS and OpenMP pools already loaded in this one (numpy's, imported before this file), torch its own.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)

from genforge.core.testing import overrides_from_spec  # noqa: E402 (after the thread settings)

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="genforge-tests-"))
os.environ["GENFORGE_HOME"] = str(_SESSION_HOME / "genforge")
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests import `helpers` and this module's TINY


def _molecule_overrides() -> list[str]:
    """The molecule generator's tiny spec as --set overrides (imported only by the tests that run it)."""
    from genforge.plugins.healthcare.generator import MoleculeDiffusion

    return overrides_from_spec(MoleculeDiffusion.test_spec)


def __getattr__(name: str):  # `from conftest import TINY`, loaded on first use: the host's tests need no field library
    if name == "TINY":
        return _molecule_overrides()
    raise AttributeError(name)


def tiny_spec(*extra: str) -> dict:
    """TINY (plus ``extra`` overrides) as a spec tree, the shape a flow's ``spec`` parameter takes."""
    from genforge.core.config import apply_override, parse_override

    tree: dict = {}
    for item in [*_molecule_overrides(), *extra]:
        keys, value = parse_override(item)
        apply_override(tree, keys, value)
    return tree


# The end-to-end modules share one PostgreSQL + Prefect stack (the ``team`` fixture): under pytest-xdist
# (`make test`: -n 2) they must run on one worker, and first, since they are the longest. xdist's own
# `--dist loadgroup` does not group under pytest 9 (it renames nodes through an attribute pytest 9 no
# longer reads), so the grouping is a scheduler of our own: one scope for the e2e modules, one per test else.
E2E_MODULES = ("tests/test_deploy_e2e.py", "tests/test_team_docs.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class E2EFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.split("::")[0] in E2E_MODULES else nodeid

    return E2EFirst(config, log)


def pytest_collection_modifyitems(config, items):
    """The e2e modules first: their stack starts, and their flow runs wait, while the other worker runs the rest."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in E2E_MODULES)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A fresh run store for one test."""
    monkeypatch.setenv("GENFORGE_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def tiny() -> list[str]:
    return _molecule_overrides()


@pytest.fixture(scope="session")
def _toy_site(tmp_path_factory) -> Path:
    from helpers.fake_dist import install

    return install(tmp_path_factory.mktemp("toy-site"), "genforge-toy", "genforge.core.testing.toy:plugin", None, entry_point="toy")


@pytest.fixture
def toy_dist(_toy_site, monkeypatch) -> SimpleNamespace:
    """The toy plugin installed as a distribution (entry point ``toy``), for this process and, through ``pythonpath``, its children."""
    monkeypatch.syspath_prepend(str(_toy_site))
    return SimpleNamespace(site=_toy_site, pythonpath=os.pathsep.join(p for p in (str(_toy_site), os.environ.get("PYTHONPATH", "")) if p))


@pytest.fixture(scope="session")
def molecule_run(tmp_path_factory) -> SimpleNamespace:
    """One finished tiny molecule run, made by `genforge run --no-prefect` in this process, in a store of its own.

    Shared by the tests of `show`, `runs` and `evaluate` that only read it; a test that changes a run makes its own.
    """
    from helpers.cli import genforge, sets

    home = tmp_path_factory.mktemp("molecule-store")
    r = genforge("run", "molecule-diffusion", "--no-prefect", *sets(_molecule_overrides()), env={"GENFORGE_HOME": str(home)})
    assert r.code == 0, r.stderr
    return SimpleNamespace(home=home, path=next((home / "runs").iterdir()), output=r.stdout)


@pytest.fixture(scope="session")
def team():
    """docs/deploy.md's team set-up, replayed once for the session's end-to-end tests (tests/helpers/team.py)."""
    from helpers import team as stack

    if not stack.postgres_installed():
        pytest.skip("PostgreSQL's server programs are not installed")
    t = stack.bring_up()
    try:
        yield t
    finally:
        t.stop()
