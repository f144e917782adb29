"""Experiments: what the recipes, benchmarks and ``pan-repair compare`` build on, above the
library: the recipes' pipeline and command line (:mod:`.pipeline`, :mod:`.recipe_cli`), a
LightningModule that logs border bias (:mod:`.lit_module`), the comparison report
(:mod:`.compare`) and the placement-shortcut testbed (:mod:`.shortcut`).
Nothing in the library imports it except :mod:`pan_repair.cli`. The package itself imports
nothing, so that one module (say the testbed) comes without the pipeline and matplotlib: import
from its modules."""
