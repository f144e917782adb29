"""The public API's docstring examples run (doctest)."""
import doctest

import pan_repair
import pan_repair.detector


def test_package_docstring_examples():
    for module in (pan_repair, pan_repair.detector):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
