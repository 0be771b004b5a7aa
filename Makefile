# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# make cannot name a file with a space as a target: the one the set-up makes is VENV's, relative by
# default (so the checkout's folder may have spaces); BIN and OUT are quoted, and may have them too.
SETUP := $(VENV)/bin/trtforge

.PHONY: demo test lint bench clean

# The gpu extra (cuda-python, a few MB) everywhere: the TensorRT runner's and the engine pool's tests
# run on any GPU host (WSL's /dev/dxg too), and those that need no GPU run on every host.
EXTRAS := rtx,dev,gpu

# editable_mode=compat: the source folder on sys.path through a plain .pth line; setuptools' default
# editable finder for this flat layout is imported by every Python process (~10 ms of each command).
# setuptools calls compat mode transitional: where it is gone, the default mode installs the same.
$(SETUP): pyproject.toml Makefile
	$(PYTHON) -m venv "$(VENV)"
	"$(VENV)/bin/pip" install --quiet --upgrade pip
	"$(VENV)/bin/pip" install --quiet -e '.[$(EXTRAS)]' --config-settings editable_mode=compat \
		|| "$(VENV)/bin/pip" install --quiet -e '.[$(EXTRAS)]'
	@touch "$@"

demo: $(SETUP)
	"$(BIN)/trtforge" build configs/digits-fp32.yaml configs/digits-fp16.yaml configs/digits-int8.yaml configs/digits-dynamic.yaml --out "$(OUT)"
	"$(BIN)/python" examples/digits/compare.py "$(OUT)" --name digits-cnn
	@echo "engines in $(OUT):" && ls -1 "$(OUT)"/*.engine

test: $(SETUP)
	"$(BIN)/pytest" -q

lint: $(SETUP)
	"$(BIN)/ruff" check trtforge tests benchmarks examples
	"$(BIN)/mypy" trtforge examples

bench: $(SETUP)
	mkdir -p out
	for script in build_overhead calibration check_speed ci_cache pool serve diagnose qdq_placement node_corpus trust_replay; do \
		"$(BIN)/python" benchmarks/$$script.py > out/bench-$$script.json || exit 1; done

clean:
	rm -rf "$(VENV)" out trtforge.egg-info
