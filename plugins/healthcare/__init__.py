"""genforge's healthcare plugin: molecules.

Registered through the ``genforge`` entry-point group like any outside plugin:
a data source (the shipped MOSES subset, the full MOSES sets), the ``molecule-diffusion``
generator, and the RDKit evaluator for the ``molecules`` sample kind.
"""

from genforge.core import hookimpl

from .data import MosesFull, MosesSubset
from .evaluator import MoleculeEvaluator
from .generator import MoleculeDiffusion


@hookimpl
def genforge_generators():
    return [MoleculeDiffusion]


@hookimpl
def genforge_evaluators():
    return [MoleculeEvaluator()]


@hookimpl
def genforge_datasets():
    return [MosesSubset(), MosesFull()]
