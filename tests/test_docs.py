"""The reference pages against the code, as datasette's test_docs: a type, a field or an option missing from
docs/contracts.md or docs/cli.md, or documented but gone from the code, fails here."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import genforge.core as core

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROW = re.compile(r"^\|\s*`([\w-]+)(?:\(([^)]*)\))?", re.M)  # a table row's first cell: `name` or `name(args)`

# Public members of Run and Trainer that only the host uses: the page leaves them out on purpose.
HOST_ONLY = {
    "Run": {"push", "pull", "set_status", "write_spec", "lock"},
    "Trainer": {
        "config",
        "checkpoint_dir",
        "rank",
        "world_size",
        "on_progress",
        "on_checkpoint",
        "on_resume",
        "result",
        "autocast",
        "newest_checkpoint",
    },
}


def sections(text: str, heading: str) -> dict[str, str]:
    """``### `<heading>...` `` -> the text under it, up to the next heading of level 2 or 3."""
    found = {}
    for match in re.finditer(rf"^### `{heading}`\s*$", text, re.M):
        end = re.compile(r"^#{2,3} ", re.M).search(text, match.end())
        found[match.group(1)] = text[match.end() : end.start() if end else len(text)]
    return found


CONTRACTS = sections((DOCS / "contracts.md").read_text(), r"(\w+)")


def documented_types(base: type = object) -> list[str]:
    """The page's headings that name a class of genforge.core derived from ``base`` (the others fail the first test)."""
    return sorted(n for n in CONTRACTS if isinstance(getattr(core, n, None), type) and issubclass(getattr(core, n), base))


def _instance(cls: type, tmp_path: Path):
    """An instance of the classes whose members are set in ``__init__``, to see those members."""
    if cls is core.Run:
        return core.Run(tmp_path / "run")
    if cls is core.RunStore:
        return core.RunStore(tmp_path)
    if cls is core.Trainer:
        return core.Trainer(core.TrainConfig(device="cpu"), tmp_path)
    return None


def _annotations(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in inspect.get_annotations(klass)}


def required_members(cls: type, instance) -> set[str]:
    """What the page must list: a config model's fields; otherwise every public name the class itself defines
    (fields, class attributes, methods, properties) and its instances' attributes, less what only the host uses."""
    if issubclass(cls, BaseModel):
        return set(cls.model_fields)
    own = set(vars(cls)) | set(inspect.get_annotations(cls)) | set(vars(instance) if instance is not None else ())
    return {n for n in own if not n.startswith("_")} - HOST_ONLY.get(cls.__name__, set())


def available_members(cls: type, instance) -> set[str]:
    if issubclass(cls, BaseModel):
        return set(cls.model_fields)
    return set(dir(instance if instance is not None else cls)) | _annotations(cls)


def test_every_exported_class_has_a_heading_and_every_heading_is_exported():
    exported = {name for name in core.__all__ if inspect.isclass(getattr(core, name))}
    assert exported - set(CONTRACTS) == set(), "exported by genforge.core but not in docs/contracts.md"
    assert set(CONTRACTS) - exported == set(), "in docs/contracts.md but not exported by genforge.core"


@pytest.mark.parametrize("name", documented_types())
def test_a_type_lists_its_members_and_nothing_it_lacks(name, tmp_path):
    cls = getattr(core, name)
    instance = _instance(cls, tmp_path)
    documented = dict(ROW.findall(CONTRACTS[name]))  # member -> its arguments as written ("" for none)
    missing = required_members(cls, instance) - set(documented)
    assert not missing, f"{name}: {sorted(missing)} not in its table in docs/contracts.md"
    unknown = set(documented) - available_members(cls, instance)
    assert not unknown, f"{name}: docs/contracts.md lists {sorted(unknown)}, which {name} does not have"
    if dataclasses.is_dataclass(cls):
        assert {f.name for f in dataclasses.fields(cls)} <= set(documented)


@pytest.mark.parametrize("name", documented_types())
def test_a_method_has_the_arguments_written(name):
    """`name(a, b=1)` in a table is a method with those arguments and defaults; `name` alone is not a method."""
    cls = getattr(core, name)
    for row in re.finditer(r"^\|\s*`(\w+)(\(([^)]*)\))?", CONTRACTS[name], re.M):
        member, call, written = row.group(1), row.group(2), row.group(3)
        static = inspect.getattr_static(cls, member, None)
        if issubclass(cls, BaseModel) or static is None:  # a field, a ClassVar without a value, an instance attribute
            assert call is None, f"{name}.{member} is written as a method in docs/contracts.md"
            continue
        if call is None:
            assert not inspect.isfunction(static), f"{name}.{member} is a method: write its arguments in docs/contracts.md"
            continue
        assert inspect.isfunction(static), f"{name}.{member} is not a method, but docs/contracts.md gives it arguments"
        params = [p for p in inspect.signature(static).parameters.values() if p.name != "self"]
        args = [a.strip() for a in written.split(",") if a.strip()]
        assert [a.split("=")[0] for a in args] == [p.name for p in params], (
            f"{name}.{member}: documented ({written}), code {inspect.signature(static)}"
        )
        for arg, param in zip(args, params):
            if "=" in arg:
                written_default = arg.split("=", 1)[1]
                try:
                    same = ast.literal_eval(written_default) == param.default
                except ValueError:  # a name, such as a type (shape=dict)
                    same = written_default == getattr(param.default, "__name__", None)
                assert same, f"{name}.{member}: default of {param.name}"
            else:
                assert param.default is inspect.Parameter.empty, f"{name}.{member}: write {param.name}'s default"


@pytest.mark.parametrize("name", documented_types(BaseModel))
def test_a_config_table_gives_the_code_defaults(name):
    """The default column of a config model's table: what the field defaults to, where it is a plain value."""
    fields = getattr(core, name).model_fields
    for line in CONTRACTS[name].splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        member, default = cells[0].strip("`"), cells[2].strip("`")
        field = fields[member]
        try:
            written = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            continue  # not a plain value (`DataConfig()`)
        code = field.default_factory() if field.default_factory else field.default
        assert written == code, f"{name}.{member}: docs/contracts.md says {default}, the code {code!r}"


@pytest.mark.parametrize("name", documented_types(Exception))
def test_an_error_names_its_base(name):
    for base in getattr(core, name).__bases__:
        assert f"`{base.__name__}`" in CONTRACTS[name], f"docs/contracts.md: say that {name} is a {base.__name__}"


# -- docs/cli.md against the typer app ---------------------------------------------------


def cli_commands() -> dict:
    """Every command of the ``genforge`` command line, plugins' commands included, as click commands."""
    import typer

    from genforge.flows import cli

    cli.add_plugin_commands()
    commands = {}
    for name, command in typer.main.get_command(cli.app).commands.items():
        commands[name] = command
        for sub, subcommand in getattr(command, "commands", {}).items():  # a group's commands: `runs prune`
            commands[f"{name} {sub}"] = subcommand
    return commands


def test_every_command_and_option_is_in_the_cli_reference():
    from genforge.core.plugin_manager import plugin_infos

    text = (DOCS / "cli.md").read_text()
    # `genforge runs prune`: lowercase words name a command; RUN and [RUN] are its arguments
    headings = dict(re.findall(r"^### `genforge ([\w-]+(?: [a-z][\w-]*)*)((?: [A-Z\[]\S*)*)`\s*$", text, re.M))
    documented = sections(text, r"genforge ([\w-]+(?: [a-z][\w-]*)*)[^`]*")
    commands = cli_commands()
    if "creative" not in {i.name for i in plugin_infos() if i.status == "loaded"}:
        documented.pop("harmonise", None)  # the creative plugin's command, there when its extra is installed
    assert set(commands) - set(documented) == set(), "commands missing from docs/cli.md"
    assert set(documented) - set(commands) == set(), "docs/cli.md documents commands genforge does not have"
    for name, command in commands.items():
        body = documented[name]
        arguments = [p for p in command.params if p.param_type_name == "argument"]  # (typer ships its own click)
        written = headings[name].split()
        assert len(written) == len(arguments), f"genforge {name}: the heading shows {written}, the command takes {len(arguments)}"
        for word, arg in zip(written, arguments):
            assert word.startswith("[") != arg.required, f"genforge {name}: {word} is {'required' if arg.required else 'optional'}"
        options = {opt for p in command.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
        for opt in options:
            assert f"`{opt}`" in body, f"genforge {name}: {opt} is not in docs/cli.md"
        first_cells = "\n".join(line.split("|")[1] for line in body.splitlines() if line.startswith("| `"))
        gone = set(re.findall(r"`(--?[\w-]+)`", first_cells)) - options
        assert not gone, f"genforge {name}: docs/cli.md documents {sorted(gone)}, which the command does not take"


# -- links between the pages -----------------------------------------------------------


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces as dashes, repeats numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def test_every_link_between_the_pages_finds_its_file_and_heading():
    root = DOCS.parent
    pages = [root / "README.md", root / "DEVELOPERS.md", root / "CHANGELOG.md", *DOCS.glob("*.md"), *root.glob("benchmarks/record/*.md")]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in set(_anchors(dest))):
                broken.append(f"{page.relative_to(root)}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)
