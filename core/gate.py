"""The promotion gate: a new model version against the alias's version, on the same reference, by the field's metrics.

Domain-free: which metrics decide, by what margin, and which must not get worse, come from the
run's ``promote`` section or the generator's declared ``gate``; each metric's direction comes
from the evaluator's ``Metric.higher_is_better``. The gate never promotes on missing evidence:
a run that did not finish, an evaluator that raised, a decisive or guard metric missing on
either side or without a direction, each makes the verdict ``refused``.

When the two versions' metrics were taken on different data (the data fingerprints differ: a
held-out file replaced, a test window that moved on), the alias's version is sampled again
with the new run's ``data`` and ``evaluate`` sections (its own sample settings, the new run's
``n`` and ``seed``) and scored on that reference before the two are compared.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pluggy

from .config import PromoteConfig
from .errors import ConfigError, GenforgeError
from .models import headline_metrics, register_run
from .plugin_manager import get_generator
from .report import png_data_url
from .store import Run, mirror
from .store.registry import ModelVersion, Registry, check_name, who

PROMOTED, HELD, REFUSED, FIRST = "promoted", "held", "refused", "first version"


@dataclass
class Comparison:
    """One metric of the two versions, as the gate read it."""

    metric: str
    role: str  # "decides", "guard" or "threshold"
    champion: float | None
    challenger: float | None
    higher_is_better: bool | None
    allowance: float  # decides: the relative margin it must beat; guard: the relative amount it may get worse by
    passed: bool
    why: str


@dataclass
class Verdict:
    """What the gate decided, and why: written beside the model's versions (``verdicts/<version>.json``)."""

    model: str
    alias: str
    challenger: int
    champion: int | None
    outcome: str  # promoted, held, refused, first version
    reasons: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    rescored_by_run: str | None = None  # the run that sampled the champion again on the challenger's reference
    when: str = ""
    by: str = ""
    metrics: list[str] = field(default_factory=list)  # what the gate reads: decisive metrics, guards, thresholds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        versus = f" against {self.model}:{self.champion}" if self.champion is not None else ""
        head = f"{self.model}:{self.challenger}{versus}: {self.outcome}"
        return head + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


@dataclass
class GateSettings:
    """What decides: the run's ``promote`` section over the generator's declared ``gate``."""

    metrics: list[str]
    margin: float
    guards: dict[str, float]
    thresholds: dict[str, float]
    directions: dict[str, bool]


def gate_settings(config: PromoteConfig, declared: dict[str, Any]) -> GateSettings:
    settings = GateSettings(
        metrics=config.metrics if config.metrics is not None else list(declared.get("metrics") or []),
        margin=config.margin if config.margin is not None else float(declared.get("margin", 0.0)),
        guards=config.guards if config.guards is not None else dict(declared.get("guards") or {}),
        thresholds=config.thresholds if config.thresholds is not None else dict(declared.get("thresholds") or {}),
        directions=dict(declared.get("directions") or {}),
    )
    if not settings.metrics:
        raise ConfigError(
            "promote.metrics: no metric decides this gate (the generator declares none); name them, e.g. "
            "--set 'promote.metrics=[\"evaluator.metric\"]'"
        )
    return settings


def run_metrics(run: Run) -> tuple[dict[str, float], dict[str, bool | None]]:
    """A run's metrics and their directions, with its numeric training details as ``training.<key>`` (a held-out loss)."""
    values, directions = headline_metrics(run)
    details = (run.read_json("training.json", {}) or {}).get("details") or {}
    values.update({f"training.{k}": float(v) for k, v in details.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return values, directions


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def compare(
    champion: dict[str, float],
    challenger: dict[str, float],
    directions: dict[str, bool | None],
    settings: GateSettings,
    first: bool = False,
) -> tuple[str, list[str], list[Comparison]]:
    """(outcome, reasons, comparisons): promoted when every decisive metric is better by the margin, no guard is worse
    than its tolerance and every threshold is reached; held otherwise; refused when a metric is missing on either side or
    has no direction (never promoted on missing evidence)."""
    directions = {**directions, **settings.directions}
    rows: list[Comparison] = []
    missing: list[str] = []
    for name, limit in settings.thresholds.items():
        b, up = _finite(challenger.get(name)), directions.get(name)
        if b is None or up is None:
            why = f"{name} missing for the challenger" if b is None else f"{name} has no direction (higher_is_better is None)"
            missing.append(why)
            rows.append(Comparison(name, "threshold", None, b, up, limit, False, why))
            continue
        passed = b >= limit if up else b <= limit
        why = f"{name} {b:.4g}: {'reaches' if passed else 'misses'} the threshold {'>=' if up else '<='} {limit:g}"
        rows.append(Comparison(name, "threshold", None, b, up, limit, passed, why))
    for role, names in (("decides", settings.metrics), ("guard", list(settings.guards))):
        for name in names:
            a, b, up = _finite(champion.get(name)), _finite(challenger.get(name)), directions.get(name)
            allowance = settings.margin if role == "decides" else float(settings.guards[name])
            if first:  # no champion: the metric must be there, with a direction; nothing to beat
                ok = b is not None and up is not None
                why = (
                    f"{name} {b:.4g}"
                    if ok
                    else f"{name} missing for the challenger"
                    if b is None
                    else f"{name} has no direction (higher_is_better is None)"
                )
                if not ok:
                    missing.append(why)
                rows.append(Comparison(name, role, None, b, up, allowance, ok, why))
                continue
            if a is None or b is None or up is None:
                side = "the champion" if a is None else "the challenger" if b is None else None
                why = f"{name} missing for {side}" if side else f"{name} has no direction (higher_is_better is None)"
                missing.append(why)
                rows.append(Comparison(name, role, a, b, up, allowance, False, why))
                continue
            gain = (b - a) if up else (a - b)  # > 0: the challenger is better
            # relative to the champion's value; at 0 nothing is relative: a decisive metric needs only to be better, a guard
            # may not get worse at all
            scale = abs(a) if a != 0 else 1.0
            if a == 0:
                allowance = 0.0
            if role == "decides":
                passed = gain > 0 and gain >= allowance * scale
                why = f"{name} {a:.4g} -> {b:.4g}: " + (
                    f"better by {gain / scale:.1%}" if gain > 0 else f"{'not better' if gain == 0 else f'worse by {-gain / scale:.1%}'}"
                )
                if gain > 0 and not passed:
                    why += f", less than the {allowance:.1%} margin"
            else:
                passed = gain >= -allowance * scale
                why = f"{name} {a:.4g} -> {b:.4g}: " + ("kept" if gain >= 0 else f"worse by {-gain / scale:.1%}")
                if not passed:
                    why += f", more than the {allowance:.1%} it may lose"
            rows.append(Comparison(name, role, a, b, up, allowance, passed, why))
    if missing:
        return REFUSED, missing, rows
    failed = [r.why for r in rows if not r.passed]
    if first:
        return (HELD, failed, rows) if failed else (PROMOTED, [], rows)
    return (HELD, failed, rows) if failed else (PROMOTED, [r.why for r in rows if r.role == "decides"], rows)


def _evaluation_errors(run: Run) -> list[str]:
    record = run.metrics()
    return [f"evaluator {ev.get('evaluator')} failed: {ev.get('error')}" for ev in record.get("evaluations") or [] if ev.get("error")]


def _verdict_path(registry: Registry, model: str, version: int, alias: str) -> str:
    return f"{registry.models_dir}/{model}/verdicts/{version:06d}-{alias}.json"


def _write_verdict(registry: Registry, verdict: Verdict) -> None:
    path = _verdict_path(registry, verdict.model, verdict.challenger, verdict.alias)
    registry.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if not mirror.create_if_absent(registry.fs, path, json.dumps(verdict.to_dict(), indent=1, default=str).encode()):
        raise GenforgeError(f"model {verdict.model}: version {verdict.challenger} was gated for @{verdict.alias} already ({path})")


def verdicts(registry: Registry, model: str) -> list[dict[str, Any]]:
    """Every verdict of ``model``'s gate (``verdicts/<version>-<alias>.json``), oldest version first."""
    folder = f"{registry.models_dir}/{check_name(model)}/verdicts"
    found = sorted(n for n in registry._ls(folder) if re.fullmatch(r"\d{6}-[A-Za-z0-9._-]+\.json", n))
    return [registry._read(f"{folder}/{n}") for n in found]


def store_of(run: Run) -> str:
    """The root of the store a run belongs to: its URL on a shared store, else the local folder (the registry lives there)."""
    if run.remote:
        return run.remote.rsplit("/runs/", 1)[0]
    return str(run.store_root)


def same_reference(champion: ModelVersion, run: Run) -> bool:
    """Whether the champion's metrics were taken as the run's are: the same prepared data, evaluator settings, n and seed."""
    own, theirs = champion.record.get("spec") or {}, run.spec
    data_same = (champion.record.get("data") or {}).get("fingerprint") == (run.read_json("data.json", {}) or {}).get("fingerprint")
    sample = [(s.get("sample") or {}).get(k) for s in (own, theirs) for k in ("n", "seed")]
    return data_same and (own.get("evaluate") or {}) == (theirs.get("evaluate") or {}) and sample[:2] == sample[2:]


def _rescore(registry: Registry, champion: ModelVersion, run: Run, pm: pluggy.PluginManager | None) -> tuple[dict[str, float], str]:
    """Sample the champion again on the challenger's reference (its data and evaluate sections, its n and seed); returns the
    champion's metrics so taken and the run that took them (in the registry's own store)."""
    from .models import create_sample_run
    from .runner import run_all

    spec = run.spec
    own = champion.record.get("spec") or {}
    sections = {
        "data": spec.get("data", {}),
        "evaluate": spec.get("evaluate", {}),
        "sample": {**(own.get("sample") or {}), **{k: spec.get("sample", {}).get(k) for k in ("n", "seed") if k in spec.get("sample", {})}},
    }
    again = create_sample_run(champion.ref, registry=registry, pm=pm, root=registry.url, sections=sections)
    run_all(again, pm)
    values = run_metrics(again)[0]
    values.update({k: v for k, v in champion.metrics.items() if k.startswith("training.")})  # its training, not the rescoring's
    return values, again.id


def gate_run(
    run: Run,
    model: str,
    registry: Registry | None = None,
    pm: pluggy.PluginManager | None = None,
    config: PromoteConfig | None = None,
    by: str | None = None,
) -> Verdict:
    """Register ``run`` as the next version of ``model`` and decide whether the alias moves to it; the verdict is recorded.

    The registry defaults to the run's own store. A version is gated once per alias: a second gate is refused before
    anything moves. A first version takes the alias only when every metric the gate reads is there, with a direction,
    and every threshold is reached (never on missing evidence).
    """
    import datetime as dt

    registry = registry or Registry(store_of(run))
    check_name(model)
    config = config or PromoteConfig(model=model)
    alias = check_name(config.alias, "alias")
    by = by or who()
    generator = get_generator(run.generator, pm)
    settings = gate_settings(config, generator.gate)
    existing = [v for v in registry.versions(model) if v.run_id == run.id] if registry._version_numbers(model) else []
    version = existing[-1] if existing else register_run(run, model, registry, pm, by=by)
    path = _verdict_path(registry, model, version.version, alias)
    if registry.fs.exists(path):
        raise GenforgeError(f"model {model}: version {version.version} was gated for @{alias} already ({path})")
    current = registry.aliases(model).get(alias)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    read = list(dict.fromkeys([*settings.metrics, *settings.guards, *settings.thresholds]))
    verdict = Verdict(model, alias, version.version, current, REFUSED, [], when=now, by=by, metrics=read)
    errors = _evaluation_errors(run)
    challenger_metrics, directions = run_metrics(run)
    if errors:
        verdict.reasons = errors
    elif current is None:
        outcome, reasons, rows = compare({}, challenger_metrics, directions, settings, first=True)
        verdict.comparisons = rows
        verdict.outcome, verdict.reasons = outcome, reasons
        if outcome == PROMOTED:
            try:
                registry.move_alias(model, alias, version.version, f"first version of {model}", by=by, expect=None)
                verdict.outcome, verdict.reasons = FIRST, [f"{model} had no @{alias}: its first version takes it", *reasons]
            except GenforgeError as exc:  # another first version got there first
                verdict.outcome, verdict.reasons = REFUSED, [str(exc)]
    else:
        champion = registry.version(model, current)
        if champion.generator != run.generator:
            verdict.reasons = [
                f"@{alias} is a {champion.generator!r} model and this run a {run.generator!r} one: their metrics do not compare"
            ]
        else:
            champion_metrics = champion.metrics
            directions = {**(champion.record.get("directions") or {}), **directions}
            if not same_reference(champion, run):
                champion_metrics, verdict.rescored_by_run = _rescore(registry, champion, run, pm)
            outcome, reasons, rows = compare(champion_metrics, challenger_metrics, directions, settings)
            verdict.comparisons = rows
            verdict.outcome, verdict.reasons = outcome, reasons
            if verdict.rescored_by_run:
                verdict.reasons = [
                    *reasons,
                    f"@{alias} (version {current}) was sampled again on this run's reference by run {verdict.rescored_by_run}",
                ]
            if outcome == PROMOTED:
                try:
                    registry.move_alias(model, alias, version.version, f"gate: {'; '.join(reasons)}", by=by, expect=current)
                except GenforgeError as exc:  # another promotion got in first: decide again, never overwrite it
                    verdict.outcome, verdict.reasons = REFUSED, [str(exc)]
    _write_verdict(registry, verdict)
    return verdict


# -- what a person reads: the comparison and the model's history ----------------------------------------------------


def verdict_markdown(registry: Registry, verdict: Verdict, max_pictures: int = 4) -> str:
    """The comparison as markdown: metric by metric with direction and allowance, the verdict and its reasons, and the two
    versions' pictures side by side (inline PNG data URLs, which the Prefect UI renders)."""
    model = verdict.model
    champion = f"{model}:{verdict.champion}" if verdict.champion is not None else "none"
    lines = [
        f"# {model}:{verdict.challenger} against @{verdict.alias} ({champion}): **{verdict.outcome}**",
        "",
        *[f"- {r}" for r in verdict.reasons],
        "",
    ]
    if verdict.comparisons:
        lines += ["| metric | role | direction | allowance | champion | challenger | |", "|---|---|---|---|---:|---:|---|"]
        for c in verdict.comparisons:
            direction = "higher is better" if c.higher_is_better else "lower is better" if c.higher_is_better is False else "none"
            allowance = f"{c.allowance:g}" if c.role == "threshold" else f"{c.allowance:.1%}"
            champ, chal = ("" if x is None else f"{x:.4g}" for x in (c.champion, c.challenger))
            lines.append(f"| {c.metric} | {c.role} | {direction} | {allowance} | {champ} | {chal} | {'pass' if c.passed else 'fail'} |")
        lines.append("")
    if verdict.rescored_by_run:
        lines += [f"The champion was sampled again on the challenger's reference by run `{verdict.rescored_by_run}`.", ""]
    if verdict.champion is not None:
        try:
            a = registry.files(registry.version(model, verdict.champion))
            b = registry.files(registry.version(model, verdict.challenger))
        except GenforgeError:
            return "\n".join(lines)
        both = sorted(
            p.relative_to(b).as_posix()
            for p in (b / "figures").rglob("*.png")
            if (a / p.relative_to(b)).is_file() and not p.relative_to(b).as_posix().startswith("figures/training/")
        )[:max_pictures]
        for rel in both:
            lines += [
                f"**{rel}**: {champion} (left), {model}:{verdict.challenger} (right)",
                "",
                f"![{rel}]({_side_by_side(a / rel, b / rel)})",
                "",
            ]
    return "\n".join(lines)


def _side_by_side(left: Any, right: Any, height: int = 360) -> str:
    """Two pictures as one PNG data URL, side by side at the same height (a markdown table would cut the right one off)."""
    import io

    from PIL import Image

    with Image.open(left) as x, Image.open(right) as y:
        pics = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in (x, y)]
    gap = 12
    out = Image.new("RGB", (pics[0].width + gap + pics[1].width, height), "white")
    out.paste(pics[0], (0, 0))
    out.paste(pics[1], (pics[0].width + gap, 0))
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return png_data_url(buf.getvalue())


def history_markdown(registry: Registry, model: str, metrics: list[str] | None = None, last: int = 10, alias: str = "champion") -> str:
    """A model's last ``last`` versions: each decisive metric over the versions as a small chart, and who held the alias."""
    import io

    versions = registry.versions(model)[-last:]
    log = registry.alias_log(model)
    judged = {v.get("challenger"): v for v in verdicts(registry, model)}
    if metrics is None:  # what the newest verdict read
        newest = judged[max(judged)] if judged else {}
        metrics = list(newest.get("metrics") or [])
    lines = [f"# {model}: the last {len(versions)} versions", ""]
    lines += ["| " + " | ".join(["version", "registered", "run", "verdict", *metrics]) + " |", "|---|---|---|---|" + "---:|" * len(metrics)]
    for v in versions:
        outcome = judged.get(v.version, {}).get("outcome", "")
        cells = [f"{v.metrics[m]:.4g}" if isinstance(v.metrics.get(m), (int, float)) else "" for m in metrics]
        registered = str(v.record.get("registered", ""))[:16].replace("T", " ")  # to the minute: the table stays narrow
        lines.append("| " + " | ".join([str(v.version), registered, v.run_id, outcome, *cells]) + " |")
    moves = [r["move"] for r in log][-last:]
    if moves:
        lines += [
            "",
            "Alias moves:",
            *[f"- @{m['alias']}: {m['from']} -> {m['to']} ({m['when']}, {m['by']}): {m['reason']}" for m in moves],
        ]
    if metrics and versions:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.4), squeeze=False)
        held = {r["generation"]: r["aliases"] for r in log}
        champions = {n for aliases in held.values() for a, n in aliases.items() if a == alias}
        for ax, m in zip(axes.flat, metrics):
            xs = [v.version for v in versions if isinstance(v.metrics.get(m), (int, float))]
            ys = [v.metrics[m] for v in versions if isinstance(v.metrics.get(m), (int, float))]
            ax.plot(xs, ys, marker="o", lw=1)
            ax.scatter([x for x in xs if x in champions], [y for x, y in zip(xs, ys) if x in champions], s=60, facecolors="none",
                       edgecolors="C3", label=f"held @{alias}")  # fmt: skip
            ax.set_title(m, fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # versions are whole numbers
            ax.set_xlabel("version", fontsize=8)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        lines += ["", f"![history]({png_data_url(buf.getvalue())})"]
    return "\n".join(lines)
