"""The molecule generator and its evaluators pass the same conformance checks as any outside plugin."""

from __future__ import annotations

from genforge.core.testing import check_generator


def test_molecule_diffusion_passes_the_conformance_checks(genforge_home):
    steps = check_generator("molecule-diffusion")
    assert steps.run.read_json("training.json")["throughput"]["unit"] == "tokens/s"
    metrics = steps.run.read_json("samples.json")
    assert metrics["count"] == 40 and metrics["details"]["strategy"] == "margin"
