# Two commands do all set-up on a fresh machine:
#   make run   - create .venv, install, build the toy world and run the study on it
#   make test  - create .venv, install, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: run stress test install dryrun bench

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores $(CORES)

# The stress study (config/stress.yaml: plain UCE against uce-persist), on the same toy world.
stress: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores $(CORES) --configfile config/stress.yaml
	HF_HUB_OFFLINE=1 $(BIN)/python -m editpersist.evaluation.compare results/stress/persistence.csv uce uce-persist

dryrun: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake -n --cores $(CORES)

# Benchmarks (not tests): needs the study run by `make run`; writes results/bench/*.json.
bench: $(STAMP)
	for what in uce refact finetune generation storage overhead stages; do \
		HF_HUB_OFFLINE=1 $(BIN)/python -m editpersist.bench $$what || exit 1; done

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)
