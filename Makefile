# Two commands work on a fresh machine: `make demo` and `make test`. Each creates .venv and installs what it needs.
# `make notebooks` adds Jupyter (the [notebooks] extra) to .venv and opens JupyterLab on the repository.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo_output
export HF_HUB_OFFLINE := 1

.PHONY: venv demo test notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m hrv_diffusion.cli.demo --output_dir $(DEMO_DIR)

test: venv
	$(PY) -m pytest -q

notebooks: venv
	$(PY) -m pip install -q -e ".[notebooks]"
	$(PY) -m jupyter lab --notebook-dir=.

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
