"""`pip install genforge` into a fresh virtual environment, as a finance team would: the host works without any industry.

Marked slow (about two minutes: torch and Prefect are installed afresh); `make test-all` and
`.ci/run` run it. The same behaviour is checked in the default suite with the libraries hidden
(tests/test_host.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
TORCH = os.environ.get("TORCH_SPEC", "torch==2.13.0")  # the Makefile's pin: the CPU wheel


def sh(*cmd: str, env: dict | None = None, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    if ok:
        assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_the_bare_distribution_works_and_each_industry_is_an_extra(tmp_path):
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", str(venv))
    py, genforge = str(venv / "bin" / "python"), str(venv / "bin" / "genforge")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "GENFORGE_HOME": str(tmp_path / "store"),
        "LANG": "C.UTF-8",
    }
    sh(py, "-m", "pip", "install", "-q", TORCH, env=env)
    sh(py, "-m", "pip", "install", "-q", str(ROOT), env=env)

    listing = sh(genforge, "plugins", env=env).stdout
    for industry in ("healthcare", "finance", "creative"):
        assert f"pip install 'genforge[{industry}]'" in listing, listing
    assert sh(py, "-c", "import rdkit", env=env, ok=False).returncode != 0

    # the plugin kit: a new plugin's package installs and runs through the host
    sh(genforge, "new-plugin", "acme-chem", "--out", str(tmp_path), env=env)
    sh(py, "-m", "pip", "install", "-q", str(tmp_path / "acme-chem"), env=env)
    run = sh(genforge, "run", "acme-chem-generator", "--no-prefect", env=env)
    assert "run folder:" in run.stdout

    # the finance extra: its generators run without RDKit
    sh(py, "-m", "pip", "install", "-q", f"{ROOT}[finance]", env=env)
    garch = sh(
        genforge,
        "run",
        "garch",
        "--no-prefect",
        "--set",
        "data.start=2010-01-01",
        "--set",
        "data.test_start=2014-01-01",
        "--set",
        "sample.n=100",
        "--set",
        "sample.horizon=10",
        "--set",
        "sample.backtest=false",
        env=env,
    )
    assert "run folder:" in garch.stdout
    assert sh(py, "-c", "import rdkit", env=env, ok=False).returncode != 0
    assert "pip install 'genforge[healthcare]'" in sh(genforge, "plugins", env=env).stdout
