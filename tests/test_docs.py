"""Every docstring example in the package runs (doctest)."""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import pan_repair

MODULES = ["pan_repair"] + [m.name for m in pkgutil.walk_packages(pan_repair.__path__, "pan_repair.")]
WITH_EXAMPLES = [name for name in MODULES if ">>> " in inspect.getsource(importlib.import_module(name))]


def test_the_public_modules_have_examples():
    assert {"pan_repair", "pan_repair.detect.detector", "pan_repair.repair.consistency", "pan_repair.repair.pruning",
            "pan_repair.repair.regularizer", "pan_repair.metrics.bias"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, name
