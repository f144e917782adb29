"""Command line of the recipes: every argument of the recipe function is an option and a YAML key
(``--config recipe.yaml``, ``--print_config``), as with LightningCLI (jsonargparse). Bad input
prints one line and exits with status 2."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_recipe"]


def run_recipe(recipe: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` into ``recipe``'s arguments and run it; 0 on success, 2 on bad input."""
    from jsonargparse import ActionConfigFile, ArgumentParser  # the recipes' functions run without it

    parser = ArgumentParser(prog=recipe.__name__, exit_on_error=False,
                            description=(recipe.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with recipe arguments")
    parser.add_function_arguments(recipe)
    try:
        config = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        kwargs = vars(parser.instantiate_classes(config))  # nested dataclasses (setup) as instances
        kwargs.pop("config", None)
        recipe(**kwargs)
    except Exception as err:  # bad config, missing dataset, bad model spec: one line, no traceback
        if not isinstance(err, (ValueError, OSError)) and type(err).__name__ != "ArgumentError":
            raise
        print(f"{recipe.__name__}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0
