"""Import the repository's scripts (benchmarks, recipes) as modules for the tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str) -> ModuleType:
    """``path`` executed as module ``name``, registered in ``sys.modules`` (dataclasses look their
    module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as module ``<name>_bench``."""
    return load_script(ROOT / "benchmarks" / f"{name}.py", f"{name}_bench")


def measure_one_thread(bench: ModuleType, *args):
    """``bench.measure(*args)`` at one torch thread (the benchmarks' figures are per thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.measure(*args)
    finally:
        torch.set_num_threads(threads)
