"""benchmarks/mitigations.py at a tiny size: every row and column is there, with finite values."""
import math

import torch

from pan_repair import SmallCNN
from _scripts import benchmark

torch.set_num_threads(2)

bench = benchmark("mitigations")

ROWS = ["baseline", "replicate", "prune PANs, low thr.", "prune + re-detect, low thr.",
        "prune random, low thr. (control)", "PAN penalty (default)", "padding consistency",
        "padding consistency, warm-up + ink probes"]


def test_part_a_rows_and_columns(tmp_path, capsys):
    data = bench.load_digits(limit=16)
    rows = {name: fn for name, fn in bench.mitigations().items() if name in ROWS}
    jsonl = tmp_path / "a.jsonl"
    results = bench.run_part_a(data, [0], rows, bench.FineTune(epochs=1, rounds=2), epochs=1, width=8,
                               log=lambda s: None, jsonl=str(jsonl))
    assert sorted(results) == sorted(ROWS)
    for name, (res,) in results.items():
        for key in ("acc_biased", "acc_swapped", "acc_random", "swapped_no_ft", "reliance", "wall", "pans_before",
                    "pans_after"):
            assert math.isfinite(res[key]), (name, key, res[key])
        assert 0 <= res["acc_swapped"] <= 1 and 0 <= res["reliance"] <= 1
    assert results["replicate"][0]["reliance"] == 0.0  # already replicate: switching changes nothing
    pruned = results["prune PANs, low thr."][0]["pruned"]
    control = results["prune random, low thr. (control)"][0]["pruned"]
    assert control == pruned > 0  # the same count, drawn at random
    table = bench.table_a(results)
    lines = table.splitlines()
    assert lines[0].count("|") == 13 and all(line.count("|") == 13 for line in lines[2:2 + len(ROWS)])
    assert all(any(line.startswith(f"| {name}") for line in lines) for name in ROWS)
    bench.main(["--from-jsonl", str(jsonl)])  # the same table from the saved results
    assert capsys.readouterr().out.strip() == table


def test_part_b_agreement_on_a_small_model():
    torch.manual_seed(0)
    model = SmallCNN(in_chans=3, num_classes=5, depth=3, width=8).eval()
    views = torch.randn(6, 3, 32, 32)
    rows = bench.run_part_b(scan=True, model=model, views=views, input_size=(3, 32, 32), log=lambda s: None)
    names = [r["name"] for r in rows]
    assert names[:5] == ["original", "reflect", "replicate", "partial", "circular"]
    assert rows[0]["agreement"] == 1.0
    assert all(0 <= r["agreement"] <= 1 and r["pans_after"] is not None for r in rows)
    table = bench.table_b(rows, len(views))
    assert len(table.splitlines()) == 2 + len(rows)
