"""genforge's creative plugin: pictures and music.

Registered through the ``genforge`` entry-point group like any outside plugin:

- images: the ``image-diffusion`` generator (an EDM U-Net on the digits, CIFAR-10 or a
  user's own folder of images) and the ``image`` evaluator (Fréchet distance, KID,
  precision/recall and a memorisation check on features of a classifier trained on the
  reference data);
- music: the ``chorale-diffusion`` generator (four-part chorales, left to right
  with counterpoint rules or masked diffusion on the shared transformer, melody harmonisation), the ``chorale``
  evaluator (music21: tonality, ranges, voice crossings, parallel fifths and octaves) and
  the ``genforge harmonise`` command.
"""

from genforge.core import hookimpl

from .images.data import Digits
from .images.evaluator import ImageEvaluator
from .images.generator import ImageDiffusion
from .music.data import BachChorales
from .music.evaluator import ChoraleEvaluator
from .music.generator import ChoraleDiffusion


@hookimpl
def genforge_generators():
    return [ImageDiffusion, ChoraleDiffusion]


@hookimpl
def genforge_evaluators():
    return [ImageEvaluator(), ChoraleEvaluator()]


@hookimpl
def genforge_datasets():
    return [Digits(), BachChorales()]


@hookimpl
def genforge_commands(app):
    from .music.commands import harmonise

    app.command()(harmonise)
