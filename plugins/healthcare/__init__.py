"""genforge's healthcare plugin: molecules.

Registered through the ``genforge`` entry-point group like any outside plugin:
a data source (the shipped MOSES subset, the full MOSES sets), the ``molecule-diffusion``
generator, and two evaluators for the ``molecules`` sample kind: RDKit properties and the MOSES suite.
"""

from genforge.core import hookimpl

from .data import MosesFull, MosesSubset
from .evaluator import MoleculeEvaluator, MosesEvaluator
from .generator import MoleculeDiffusion


@hookimpl
def genforge_generators():
    return [MoleculeDiffusion]


@hookimpl
def genforge_evaluators():
    return [MoleculeEvaluator(), MosesEvaluator()]


@hookimpl
def genforge_datasets():
    return [MosesSubset(), MosesFull()]
