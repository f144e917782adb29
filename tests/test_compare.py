"""`pan-repair compare` builds an HTML report from run directories; bad runs get one-line errors."""
import pytest

from pan_repair import find_pans
from pan_repair.cli import main
from pan_repair.models import SmallCNN
from pan_repair.results import RunResult


@pytest.fixture
def two_runs(tmp_path):
    report = find_pans(SmallCNN(1, 10, width=8, depth=3), (1, 32, 32), n_patterns=2).to_dict()
    dirs = []
    for name, acc in (("baseline", 0.91), ("pruned", 0.89)):
        run = RunResult(name, "g", "prune_finetune", metrics={"val/acc": acc, "pan/count": 3.0},
                        border_curve=[0.5, None, 0.9], history=[{"epoch": 0, "count": 1}, {"epoch": 1, "count": 3}],
                        report=report)
        dirs.append(run.save(tmp_path / name).parent)
    return dirs


def test_compare_writes_html_with_plots(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "<td>baseline</td><td>0.91</td>" in page and "<td>pruned</td><td>0.89</td>" in page
    for png in ("pans_per_layer.png", "timeline.png", "border_curve.png", "metrics.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and png in page
    assert str(out / "index.html") in capsys.readouterr().out


def test_result_round_trip(two_runs):
    run = RunResult.load(two_runs[0])
    assert run.metrics["val/acc"] == 0.91 and run.border_curve == [0.5, None, 0.9]
    assert run.pan_report().total_filters == 24


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "holds no results.json"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text("{not json")), "is corrupt"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text('{"name": "x", "bogus": 1}')), "is corrupt"),
])
def test_bad_run_dirs_fail_in_one_line_and_write_nothing(setup, message, tmp_path, two_runs, capsys):
    bad = tmp_path / "bad"
    setup(bad)
    out = tmp_path / "never"
    assert main(["compare", str(two_runs[0]), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
