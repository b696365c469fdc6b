"""genforge.core.testing: what a plugin's tests need, registered as a pytest plugin (``pytest11``).

Fixtures (available in any project that has genforge installed):

- ``genforge_home``: a fresh, empty run store for the test (``$GENFORGE_HOME``);
- ``genforge_pm``: a factory for an isolated plugin manager: ``pm = genforge_pm(MyPlugin())``
  holds only the plugins given (``genforge_pm(entrypoints=True)`` also loads the installed ones).

Functions:

- ``quick_run(generator, spec, pm)``: prepare, train, sample and evaluate in this process;
- ``overrides_from_spec(tree)``: a spec tree as ``--set`` overrides (for CLI tests);
- ``check_generator(generator, spec, pm)``: the conformance checks every generator passes
  (config defaults valid; prepare / fit / sample round trip on tiny data; samples load
  back through their kind; each evaluator's metrics well formed; same seed, same samples);
- ``check_evaluator(evaluator, samples, reference, out_dir)``: the same for one evaluator.

``genforge.core.testing.toy`` is a small plugin of its own kind (no field library) for tests.
"""

from .conformance import check_config_defaults, check_evaluation, check_evaluator, check_generator
from .runner import overrides_from_spec, quick_run

__all__ = ["check_config_defaults", "check_evaluation", "check_evaluator", "check_generator", "overrides_from_spec", "quick_run"]
