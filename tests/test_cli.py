"""`pan-repair scan` as a user runs it: a table, JSON, a PNG, one-line errors with exit status 2."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pan_repair.cli import main
from pan_repair.detect.report import PanReport


def tiny_factory() -> nn.Module:
    """Importable as ``test_cli:tiny_factory``: one planted top-border detector."""
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 0, :] = 1.0   # edge kernel: blind inside, fires on the zero frame
        conv.weight[0, :, 1, :] = -1.0
        conv.weight[1:, :, 1, 1] = 1.0
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))


def test_scan_factory_writes_table_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    flat = tmp_path / "flat.pt"  # flat images: the zero frame is the only edge the kernel meets
    torch.save(torch.linspace(0.5, 1.5, 8).view(8, 1, 1, 1).expand(8, 3, 32, 32).clone(), flat)
    code = main(["scan", "test_cli:tiny_factory", "--data", str(flat), "--json", str(out_json),
                 "--plot", str(out_png), "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "1 PANs" in table and "total" in table
    report = PanReport.load(out_json)
    assert [(p.layer, p.channel, p.sides, p.kind) for p in report.pans] == [("0", 0, ("top",), "border")]
    assert json.loads(out_json.read_text())["total_filters"] == 4
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scan_timm_name_with_weights(tmp_path, capsys):
    model = __import__("timm").create_model("resnet10t")
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    assert main(["scan", "resnet10t", "--weights", str(weights), "--size", "160", "--patterns", "2",
                 "--quiet"]) == 0
    assert "resnet10t" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["scan", "no_such_model_xyz"], "unknown model 'no_such_model_xyz'"),
    (["scan", "resnet10t", "--size", "4"], "too small"),
    (["scan", "resnet10t", "--channels", "1"], "expects 3"),
    (["scan", "no_module_here:make"], "cannot import model factory"),
])
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_weights_file(tmp_path, capsys):
    garbage = tmp_path / "w.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["scan", "resnet10t", "--weights", str(garbage)]) == 2
    assert "cannot read weights" in capsys.readouterr().err
    mismatched = tmp_path / "m.pt"
    torch.save(__import__("timm").create_model("resnet18").state_dict(), mismatched)
    assert main(["scan", "resnet10t", "--weights", str(mismatched)]) == 2
    assert "do not fit resnet10t" in capsys.readouterr().err


def test_scan_at_32_px_names_what_it_assumed_and_could_not_measure(capsys):
    assert main(["scan", "resnet18", "--size", "32", "--patterns", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "assumed: data-free probes" in out and "timm pretrained_cfg" in out
    assert "layer4.1.conv2: border score not measured: output 1x1" in out
    assert "padding dependence (every padding -> replicate, 2 images)" in out


def test_scan_on_a_folder_of_images_and_a_tensor_file(tmp_path, capsys):
    from torchvision.io import write_png

    folder = tmp_path / "imgs" / "cats"
    folder.mkdir(parents=True)
    for i in range(3):
        write_png((torch.rand(3, 40, 40) * 255).to(torch.uint8), str(folder / f"{i}.png"))
    assert main(["scan", "test_cli:tiny_factory", "--data", str(tmp_path / "imgs"), "--size", "32",
                 "--input-range", "0", "1", "--quiet"]) == 0
    assert "assumed: measured on 3 data images" in capsys.readouterr().out
    tensor = tmp_path / "x.pt"
    torch.save(torch.rand(5, 3, 24, 24), tensor)
    assert main(["scan", "test_cli:tiny_factory", "--data", str(tensor), "--quiet"]) == 0
    assert "measured on 5 data images" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["scan", "test_cli:tiny_factory", "--data", str(empty)]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(["scan", "test_cli:tiny_factory", "--mean", "0.5"]) == 2
    assert "both mean and std" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pan_repair.cli", "scan", "no_such_model_xyz"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
