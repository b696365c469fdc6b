"""Outside plugins as installed distributions, without pip: a module and a ``*.dist-info`` with entry points.

Put the folder on ``PYTHONPATH`` (or ``sys.path``) and ``importlib.metadata`` finds the
distribution, its version and its ``genforge`` entry point, as for a pip-installed package.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def install(folder: Path, dist: str, module: str, source: str | None, entry_point: str | None = None, version: str = "0.1") -> Path:
    """Write ``module.py`` with ``source`` and a dist-info registering it in the ``genforge`` group.

    ``source`` None: ``module`` is an importable object reference already (``genforge.core.testing.toy:plugin``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if source is not None:
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
    info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[genforge]\n{entry_point or dist} = {module}\n")
    return folder
