"""``make demo``: scan the bundled pretrained EfficientNet-Lite0 and write its PAN report and plot."""
from __future__ import annotations

import sys
from pathlib import Path

from .cli import main as cli_main
from .model_spec import BUNDLED


def main(out_dir: str = "runs/demo") -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    code = cli_main(["scan", BUNDLED, "--json", str(out / "lite0_pans.json"),
                     "--plot", str(out / "lite0_pans.png"), "--quiet"])
    if code == 0:
        print(f"done: report and plot in {out.resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
