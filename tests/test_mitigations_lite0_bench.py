"""benchmarks/mitigations_lite0.py at a tiny size: the table has every requested row, masking the
detected PANs removes all of the baseline's PANs, and replicate padding has zero padding reliance."""
import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mitigations_lite0.py"


@pytest.mark.slow
def test_table_rows_and_measured_columns(tmp_path):
    spec = importlib.util.spec_from_file_location("mitigations_lite0_bench", _PATH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    bench.main(["--limit", "8", "--epochs", "1", "--ft-epochs", "1", "--threads", "2", "--out", str(out),
                "--only", "replicate", "prune PANs"])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| mitigation")}
    assert list(rows) == ["baseline", "replicate", "prune PANs"]
    assert int(rows["baseline"][4].split()[0]) > 100  # a PAN-rich network
    assert float(rows["prune PANs"][5]) == 100.0      # every baseline PAN masked, so none detected again
    assert float(rows["replicate"][6]) == 0.0         # already replicate: switching changes nothing
    with pytest.raises(SystemExit):
        bench.main(["--only", "no such row"])
