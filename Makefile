# Two commands on a fresh machine:  `make train` (the main job)  and  `make test` (the test suite).
# Both build the environment first: a virtualenv with the pinned requirements (reused while requirements/*.txt are
# unchanged), this project installed from the checkout, and the offline Fashion-MNIST files from Debian.
VENV ?= .venv
PYTHON ?= python3
REQ_HASH := $(shell cat requirements/*.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.requirements-$(REQ_HASH)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=
TRAIN_ARGS ?=

.PHONY: env data train test lint

$(STAMP):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/ci.txt
	touch $(STAMP)

env: $(STAMP)
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .

data:
	@test -f $(FMNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "could not install dataset-fashion-mnist (not root?): the tests that read the real data will skip"

train: env data
	$(VENV)/bin/advkd-train $(TRAIN_ARGS)

lint: env
	$(VENV)/bin/ruff check lightning_advkd tests benchmarks
	$(VENV)/bin/mypy

test: env data lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
