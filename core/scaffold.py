"""``genforge new-plugin NAME``: a plugin package rendered from a Jinja template (``core/plugin_template``).

The package has a pyproject with the ``genforge`` entry point, a sample kind of its own,
a small working generator and evaluator, and tests that pass as generated (they use
``genforge.core.testing``'s fixtures and conformance checks).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import GenforgeError

TEMPLATE = Path(__file__).parent / "plugin_template"
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def template_vars(name: str) -> dict[str, str]:
    from . import __version__

    version = __version__.split("+")[0] if __version__[0].isdigit() else "0.1"
    return {
        "name": name,
        "module": name.replace("-", "_"),
        "generator": f"{name}-generator",
        "generator_class": f"{_camel(name)}Generator",
        "evaluator": f"{name}-evaluator",
        "evaluator_class": f"{_camel(name)}Evaluator",
        "kind": f"{name}-numbers",
        "kind_class": f"{_camel(name)}Numbers",
        "genforge_version": version,
    }


def render_plugin(name: str, out: Path) -> Path:
    """Render the template into ``out/NAME``; refuses a name that is not a package name, or a folder that exists."""
    import jinja2

    if not _NAME.match(name):
        raise GenforgeError(f"plugin name {name!r}: use lowercase letters, digits and dashes, starting with a letter (e.g. acme-chem)")
    dest = Path(out) / name
    if dest.exists():
        raise GenforgeError(f"{dest} exists; choose another name or --out folder")
    values = template_vars(name)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE)), keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    for src in sorted(TEMPLATE.rglob("*.jinja")):
        rel = src.relative_to(TEMPLATE).as_posix()
        target = dest / rel.removesuffix(".jinja").replace("__module__", values["module"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(env.get_template(rel).render(**values))
    return dest
