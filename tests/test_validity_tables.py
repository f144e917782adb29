"""benchmarks/detector_validity.py's tabulation: the data-free columns taken from stem_canvas.py's scan
of the same network, and which CPU measured which cells."""
from __future__ import annotations

import copy

import pytest

from _scripts import benchmark

bench = benchmark("detector_validity")


def _row(arch="resnet18", convention="black", size=96, **extra) -> dict:
    row = dict(arch=arch, convention=convention, size=size, seed=0, threads=1, acc_digit=0.9312, acc_half=0.9988,
               free_pans=2130, free_frac=0.4437, free_kinds={"border": 1973, "position": 157}, free_margin=0.384,
               free_assumptions=["data-free probes: inputs = pixels in [0, 1]"])
    return {**row, **extra}


def _canvas(acc_digit=0.9313, threads=1, seed=0) -> dict:
    return dict(arch="resnet18", convention="black", size=96, seed=seed, threads=threads, acc_digit=acc_digit,
                acc_half=0.9988, after={"frac": 0.0852, "kinds": {"border": 400, "position": 9}, "margin": -0.001})


def test_the_same_network_gets_the_current_data_free_scan():
    rows = {"resnet18:black:96": _row()}
    bench.overlay_free(rows, [_canvas()])  # accuracies 0.9312 vs 0.9313: the files' rounding, one network
    r = rows["resnet18:black:96"]
    assert (r["free_pans"], r["free_frac"], r["free_margin"], r["mid_grey"]) == (409, 0.0852, -0.001, False)
    assert r["free_kinds"] == {"border": 400, "position": 9}


def test_another_network_keeps_its_mid_grey_scan_and_is_marked():
    for canvas in (_canvas(acc_digit=0.9337), _canvas(threads=2), _canvas(seed=1)):
        rows = {"resnet18:black:96": _row()}
        bench.overlay_free(rows, [canvas])
        assert rows["resnet18:black:96"]["mid_grey"] is True
        assert rows["resnet18:black:96"]["free_pans"] == 2130
        assert "(g)" in bench.table([{**rows["resnet18:black:96"], **_table_fields()}])


def test_rows_already_probed_at_the_implied_level_and_lite0_keep_their_scan_marked_before_the_rules():
    current = _row(free_assumptions=[f"... {bench.CANVAS_NOTE} 0.04 and the border score ..."])
    lite = _row(arch="lite0", convention="photos [-1,1]")
    rows = {"resnet18:black:96": current, "lite0:photos:96": lite}
    before = copy.deepcopy(rows)
    bench.overlay_free(rows, [_canvas()])
    for key, r in rows.items():
        assert {k: v for k, v in r.items() if k not in ("pre_rules", "mid_grey")} == before[key]
        assert (r["pre_rules"], r["mid_grey"]) == (True, False)
        assert "(pre)" in _table_line({**r, **_table_fields(), "unmeasured": []})


def _table_line(row: dict) -> str:
    """The table's line of ``row`` (its header describes the marks too)."""
    return next(line for line in bench.table([row]).splitlines() if line.startswith(("| resnet18 |", "| 96 |")))


def _interior(acc_digit=0.9313, free_after=None, data_before=None, data_after=None, arch="resnet18") -> dict:
    """A benchmarks/border_interior.py row: data-free and data scans without and with the interior rule."""
    free_after = free_after or {"frac": 0.0063, "kinds": {"border": 2, "position": 28}, "margin": 0.004}
    data_before = data_before or {"frac": 0.0573, "kinds": {"position": 275}, "margin": 0.12,
                                  "drop_flagged": [0.1, 0.3], "drop_random": [0.05, 0.13]}
    return dict(arch=arch, convention="black", size=96, seed=0, threads=1, cpu="Intel(R) Xeon(R) Processor @ 2.80GHz",
                acc_digit=acc_digit, acc_half=0.9988,
                free={"before": {"frac": 0.0852, "kinds": {"border": 400, "position": 9}}, "after": free_after,
                      "named": 3, "layers": 20},
                data={"before": data_before, "after": data_after or data_before, "named": 3, "layers": 20})


def test_a_scan_under_every_rule_replaces_any_earlier_one_and_is_not_marked():
    canvas_probed = _row(free_assumptions=[f"... {bench.CANVAS_NOTE} 0.04 ..."])
    for row in (_row(), canvas_probed):
        rows = {"resnet18:black:96": row}
        bench.overlay_free(rows, [_interior(), _canvas()])  # the later row wins: here an earlier scan's
        r = rows["resnet18:black:96"]
        assert r["free_pans"] == (2130 if row is canvas_probed else 409) and r["pre_rules"] is True
        bench.overlay_free(rows, [_canvas(), _interior()])
        assert (r["free_pans"], r["free_frac"], r["free_kinds"], r["free_margin"]) == (
            30, 0.0063, {"border": 2, "position": 28}, 0.004)
        assert (r["pre_rules"], r["mid_grey"]) == (False, False)
        assert "(pre)" not in _table_line({**r, **_table_fields()})


def test_another_cpus_network_under_the_rules_is_not_taken():
    rows = {"resnet18:black:96": _row()}
    bench.overlay_free(rows, [_canvas(), _interior(acc_digit=0.9425)])
    assert rows["resnet18:black:96"]["free_pans"] == 409 and rows["resnet18:black:96"]["pre_rules"] is True


def test_a_saturated_layers_row_counts_as_under_the_rules():
    sat = {**_canvas(), "saturated": ["layer4.1.conv2"], "after": {"frac": 0.0138, "kinds": {"position": 66},
                                                                    "margin": 0.05}}
    rows = {"resnet18:black:96": _row()}
    bench.overlay_free(rows, [sat])
    assert (rows["resnet18:black:96"]["free_pans"], rows["resnet18:black:96"]["pre_rules"]) == (66, False)


def _data_row(**extra) -> dict:
    return {**_row(), **_table_fields(), "drop_flagged": [0.1, 0.3], "drop_random": [0.05, 0.13], "sel": 0.2,
            "sel_random": 0.08, "margin": 0.12, "info_margin": 0.4, "eta_flagged": 0.4, "eta_layer": 0.1,
            "eta_margin": 0.3, **extra}


def test_a_data_scan_the_interior_rule_changed_replaces_the_rows_flags_and_verdicts():
    after = {"frac": 0.0563, "kinds": {"position": 270}, "margin": 0.05, "drop_flagged": [0.1, 0.2],
             "drop_random": [0.05, 0.1]}
    rows = {"resnet18:black:96": _data_row()}
    bench.overlay_data(rows, [_interior(data_after=after)])
    r = rows["resnet18:black:96"]
    assert (r["pans"], r["frac"], r["kinds"], r["margin"], r["sel"], r["sel_random"]) == (
        270, 0.0563, {"position": 270}, 0.05, 0.1, 0.05)
    assert r["targets"]["margin"] is False and r["interior"] is True and r["interior_named"] == 3
    assert not {"info_margin", "eta_flagged", "eta_layer", "eta_margin"} & set(r)  # measured on the old flags
    assert "270/4800 (5.6%, 0b/270p) (i)" in _table_line(r)
    assert "(i): 1 cells (resnet18:black:96)" in bench.summary([r])
    none = {"resnet18:black:96": _data_row()}
    bench.overlay_data(none, [_interior(data_after={"frac": 0.0, "kinds": {}})])
    assert none["resnet18:black:96"]["pans"] == 0 and none["resnet18:black:96"]["targets"]["margin"] is None


def test_a_data_scan_is_kept_where_the_rule_changed_nothing_or_the_scan_is_not_the_rows_own():
    after = {"frac": 0.0563, "kinds": {"position": 270}, "margin": 0.05, "drop_flagged": [0.1, 0.2],
             "drop_random": [0.05, 0.1]}
    other = {"frac": 0.06, "kinds": {"position": 288}, "margin": 0.12, "drop_flagged": [0.1, 0.3],
             "drop_random": [0.05, 0.13]}
    for interior in (_interior(), _interior(data_before=other, data_after=after), _interior(acc_digit=0.95,
                                                                                            data_after=after)):
        rows = {"resnet18:black:96": _data_row()}
        before = copy.deepcopy(rows)
        bench.overlay_data(rows, [interior])
        assert rows == before


def test_cpus_used_names_the_cells_each_recorded_cpu_measured():
    rows = [_row(cpu="Intel(R) Xeon(R) Processor"), _row(size=64)]
    text = bench.cpus_used(rows)
    assert "Intel(R) Xeon(R) Processor: 1 cells (resnet18:black:96)" in text
    assert "the other 1 on the CPU of the earlier sessions" in text
    assert bench.cpus_used([_row()]) == ""


def _table_fields() -> dict:
    """What a digits row needs besides the data-free columns to be tabulated."""
    return dict(filters=4800, pans=275, frac=0.0573, kinds={"position": 275}, twin_pans=0, twin_free_pans=0,
                dep={"output_shift": 0.002, "flip_rate": 0.0}, rep_acc_digit=0.81, rep_acc_half=1.0, scan_s=1.56,
                fwd16_s=0.06, fwd_scanbatch_s=0.6, targets={"twin0": True, "margin": True, "frac": True,
                                                              "trained": True})


class _Report:
    """What oracle_channels reads of a PanReport: the layers' scores, in network order."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.scores = {layer: {"position": [0.0] * n} for layer, n in sizes.items()}


def test_oracle_takes_the_most_position_carrying_channels_of_the_flagged_layers():
    import numpy as np

    report = _Report({"a": 4, "b": 6, "c": 3})
    eta = np.array([0.1, 0.9, 0.3, 0.5,                 # a
                    0.2, 0.0, 0.8, 0.7, 0.6, 0.05,      # b
                    0.99, 0.98, 0.97])                  # c: nothing flagged there, never picked
    flagged = [("a", 0), ("b", 5), ("b", 4)]
    assert bench.oracle_channels(eta, report, flagged, 1) == [("a", 1), ("b", 2), ("b", 3)]
    assert bench.oracle_channels(eta, report, flagged, 4) == [
        ("a", 1), ("a", 3), ("a", 2), ("a", 0),          # 4 asked, 4 in the layer
        ("b", 2), ("b", 3), ("b", 4), ("b", 0), ("b", 5), ("b", 1)]  # 8 asked, 6 in the layer


def _oracle_row(margins: tuple[float, float, float] | None, acc=(0.96, 1.0), pans=71) -> dict:
    row = dict(arch="resnet18", convention="norm", size=64, oracle_acc=list(acc), oracle_pans=pans, acc_digit=0.96,
               acc_half=1.0, pans=71, margin=0.0697)
    if margins is not None:
        row["oracle"] = {k: dict(channels=n, drop=[0.01, half], drop_random=[0.08, 0.0], margin=m)
                         for k, n, m, half in zip(("flagged", "1", "4"), (71, 71, 284), margins, (0.0, 0.01, 0.3))}
    return row


def test_oracle_section_says_which_sets_reach_the_margin_and_whose_network_it_was():
    text = bench.oracle_section([_oracle_row((0.07, 0.02, 0.31)), _oracle_row((0.12, 0.15, 0.2), acc=(0.95, 1.0)),
                                 _oracle_row(None, pans=0), _row()])
    lines = [line for line in text.splitlines() if line.startswith("| resnet18:norm:64")]
    assert lines[0].startswith("| resnet18:norm:64 | matrix's | 0.96 / 1.00 | 71, 0.01 / 0.00, 0.08 / 0.00, +0.070 |")
    assert lines[0].endswith("| - | - | - | **NO** / **NO** / yes / - / - / - |")
    assert "| another |" in lines[1] and lines[1].endswith("| yes / yes / yes / - / - / - |")
    assert "nothing flagged" in lines[2]
    assert ("3 cells where the matrix's flagged set misses the margin: margin >= +0.10 reached by the flagged set "
            "in 1 of 2, the oracle x1 in 1 of 2, the oracle x4 in 2 of 2 networks with flags; the half head moved by 0.02 or more by the flagged set in 0, the oracle x1 in 0, "
            "the oracle x4 in 2 (") in text
    assert bench.oracle_section([_row()]) == ""


def test_oracle_section_shows_the_detector_ranked_set_where_a_run_measured_it():
    row = _oracle_row((0.01, 0.02, 0.4))
    row["oracle"]["ranked4"] = dict(channels=284, drop=[0.02, 0.25], drop_random=[0.05, 0.0], margin=0.28)
    text = bench.oracle_section([row, _oracle_row((0.01, 0.02, 0.05))])
    lines = [line for line in text.splitlines() if line.startswith("| resnet18:norm:64")]
    assert "| 284, 0.02 / 0.25, 0.05 / 0.00, +0.280 |" in lines[0]
    assert lines[0].endswith("| **NO** / **NO** / yes / yes / - / - |")
    assert lines[1].endswith("| - | - | - | **NO** / **NO** / **NO** / - / - / - |")
    assert "the oracle x4 in 1 of 2, the detector x4 in 1 of 1 networks with flags" in text
    assert "the oracle x4 in 2, the detector x4 in 1 (" in text


def test_oracle_section_shows_lower_thresholds_flags_and_their_share_of_the_filters():
    row = _oracle_row((0.01, 0.02, 0.4))
    row["oracle"]["t0.45"] = dict(channels=150, frac=0.0312, drop=[0.02, 0.2], drop_random=[0.04, 0.0], margin=0.22)
    row["oracle"]["t0.3"] = dict(channels=600, frac=0.1249, drop=[0.1, 0.05], drop_random=[0.12, 0.0], margin=0.07)
    text = bench.oracle_section([row])
    line = next(line for line in text.splitlines() if line.startswith("| resnet18:norm:64"))
    assert "| 150 (3.1%), 0.02 / 0.20, 0.04 / 0.00, +0.220 | 600 (12.5%), 0.10 / 0.05, 0.12 / 0.00, +0.070 |" in line
    assert line.endswith("| **NO** / **NO** / yes / - / yes / **NO** |")
    assert "the detector at 0.45 in 1 of 1, the detector at 0.3 in 0 of 1 networks with flags" in text
    assert ("The detector at 0.45 flags over 10% of the filters without the margin in 0. The detector at 0.3 flags "
            "over 10% of the filters without the margin in 1.") in text


def test_oracle_section_tallies_cells_that_meet_the_margin_apart():
    met = _oracle_row((0.3, 0.35, 0.5))
    met["margin"] = 0.31
    text = bench.oracle_section([_oracle_row((0.01, 0.02, 0.05)), met])
    assert ("1 cell where the matrix's flagged set misses the margin: margin >= +0.10 reached by the flagged set in "
            "0 of 1,") in text
    assert "1 cell where it meets it: margin >= +0.10 reached by the flagged set in 1 of 1," in text


def _compare_row(twin_pans=0, **extra) -> dict:
    """A matrix row scanned at 0.45 with 0.6 compared (row["at"]), as ``--compare`` writes it."""
    row = {**_row(), **_table_fields(), "position_threshold": 0.45, "pans": 486, "frac": 0.1013, "twin_pans": twin_pans,
           "kinds": {"border": 6, "position": 480}, "drop_flagged": [0.2, 0.5], "drop_random": [0.05, 0.1],
           "sel": 0.3, "sel_random": 0.05, "margin": 0.25, "info_margin": 0.3, "eta_flagged": 0.4, "eta_layer": 0.1,
           "eta_margin": 0.3, "layers": {"layer4.1.conv2": 200}, "random_overlap": False,
           "at": {"0.6": dict(channels=211, frac=0.044, drop=[0.02, 0.03], drop_random=[0.0, 0.05], margin=-0.04,
                              info_margin=0.01, eta_flagged=0.5, eta_layer=0.1, eta_margin=0.4),
                  "0.5": dict(channels=0, frac=0.0)}}
    return {**row, **extra}


def test_at_threshold_takes_the_compared_flags_and_keeps_the_border_pans():
    r = bench.at_threshold(_compare_row(), 0.6)
    assert (r["position_threshold"], r["pans"], r["frac"]) == (0.6, 211, 0.044)
    assert r["kinds"] == {"border": 6, "position": 205}
    assert (r["drop_flagged"], r["margin"], r["sel"], r["sel_random"]) == ([0.02, 0.03], -0.04, 0.01, 0.05)
    assert r["eta_margin"] == 0.4 and "layers" not in r and "at" not in r
    assert r["targets"] == {"twin0": True, "trained": True, "margin": False, "frac": True}
    nothing = bench.at_threshold(_compare_row(), 0.5)
    assert nothing["pans"] == 0 and nothing["sel"] is None and "margin" not in nothing
    assert nothing["targets"]["margin"] is None
    assert bench.at_threshold(_compare_row(), 0.45)["margin"] == 0.25        # its own scan
    assert bench.at_threshold(_row(**_table_fields()), 0.6)["pans"] == 275   # rows before the threshold was recorded


def test_at_threshold_refuses_what_the_row_cannot_say():
    for row, t in ((_compare_row(), 0.4),                     # never measured there
                   (_compare_row(twin_pans=3), 0.6),          # the twin's count at 0.6 is unknown
                   (_row(**_table_fields()), 0.45)):          # a 0.6 row says nothing of 0.45
        with pytest.raises(ValueError, match="resnet18:black:96"):
            bench.at_threshold(row, t)


def test_oracle_section_names_the_threshold_its_flagged_sets_were_taken_at():
    old, new = _oracle_row((0.01, 0.02, 0.4)), _oracle_row((0.01, 0.02, 0.4))
    new["oracle_threshold"] = 0.5
    assert "own flags at that position threshold (the flagged set's: 0.6)" in bench.oracle_section([old])
    assert "(the flagged set's: 0.5 / 0.6)" in bench.oracle_section([new, old])


def test_the_oracle_still_knows_the_network_whose_data_scan_the_interior_rule_changed():
    row = {**_data_row(), "oracle_acc": [0.9312, 0.9988], "oracle_pans": 275,
           "oracle": {"flagged": dict(channels=275, drop=[0.1, 0.3], drop_random=[0.05, 0.13], margin=0.12)}}
    after = {"frac": 0.0563, "kinds": {"position": 270}, "margin": 0.05, "drop_flagged": [0.1, 0.2],
             "drop_random": [0.05, 0.1]}
    rows = {"resnet18:black:96": row}
    bench.overlay_data(rows, [_interior(data_after=after)])
    assert "| resnet18:black:96 | matrix's, flags before (i) |" in bench.oracle_section([row])
    assert "| resnet18:black:96 | another |" in bench.oracle_section([{**row, "oracle_pans": 270}])
