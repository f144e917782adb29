# Two commands do all set-up on a fresh machine:
#   make demo   — runs the main job on the embedded default (creates .venv if missing)
#   make test   — runs the test suite (creates .venv if missing)
# and `make docs` builds the documentation site into site/ (offline, strict: a warning fails it).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

.PHONY: venv demo test docs bench
venv: $(VENV)/.installed

DEMO_RUNS := baseline pruned pruned+finetuned replicate replicate+finetuned

demo: $(VENV)/.installed
	$(PY) recipes/scan_pretrained.py --config recipes/configs/scan_pretrained.yaml --out_dir runs/demo/lite0
	$(PY) recipes/prune_finetune.py --config recipes/configs/demo.yaml
	$(PY) recipes/padding_switch_finetune.py --config recipes/configs/demo.yaml --mode replicate --baseline runs/demo/baseline
	$(VENV)/bin/pan-repair compare $(addprefix runs/demo/,$(DEMO_RUNS)) --out runs/demo/report

test: $(VENV)/.installed
	$(PY) -m pytest -q

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(VENV)/.installed
	$(PY) benchmarks/scan_speed.py
	$(PY) benchmarks/scan_speed.py --data
	$(PY) benchmarks/threshold_calibration.py
	$(PY) benchmarks/convention_check.py
	$(PY) benchmarks/demo_stability.py --seeds 0 1 2 3 4 --threads 1 2
	$(PY) benchmarks/monitor_overhead.py
	$(PY) benchmarks/regularizer_cost.py
	$(PY) benchmarks/pan_penalty.py
	$(PY) benchmarks/padding_consistency.py
	$(PY) benchmarks/mitigations.py
	$(PY) benchmarks/pruning_removal.py
	$(PY) benchmarks/zoo.py --fresh
	$(PY) benchmarks/compare_runs.py
	$(PY) benchmarks/mitigations_resnet.py --task random --threads 1 --seeds 0 1 2 3 4 5 6 7 8 9
	$(PY) benchmarks/mitigations_resnet.py --task shortcut --threads 1 --seeds 0 1 2 3 4 5 6 7 8 9
	$(PY) benchmarks/mitigations_resnet.py --task border --threads 1 --seeds 0 1 2 3 4 5 6 7 8 9
	$(PY) benchmarks/mitigations_lite0.py
