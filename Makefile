# Two commands set everything up on a fresh machine:
#   make serve   serve the shipped model on 127.0.0.1:8001 (gRPC) / :8002 (metrics)
#   make test    run the whole test suite
PYTHON ?= python3
VENV ?= .venv
SERVE_VENV ?= .venv-serve
IMDB_DATA ?= $(abspath ../shared/data/aclImdb_v1.tar.gz)
export IMDB_DATA
# Two processes each spinning 2 OpenMP threads slow each other down badly on 2 cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: serve test lint train export bench clean

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[serve,client]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,serve,client,ray,dev]'
	touch $@

serve: $(SERVE_VENV)/.installed
	$(SERVE_VENV)/bin/python -m serve --model-repository models

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

train: $(VENV)/.installed
	$(VENV)/bin/python -m train --data $(IMDB_DATA) --out runs/full --preset full

export: $(VENV)/.installed
	$(VENV)/bin/python -m export --checkpoint checkpoints/best.pt --repository models --name imdb-lstm

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/serve_bench.py
	$(VENV)/bin/python bench/score_bench.py throughput --model models/imdb-lstm/1 --threads 2

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache

# Containers end to end (docs/containers.md): needs root and Debian's docker.io, docker-compose,
# debootstrap; starts dockerd if needed, builds, serves, scores over loopback, removes it all.
.PHONY: docker-test
docker-test: $(VENV)/.installed
	DOCKER_TESTS=1 $(VENV)/bin/python -m pytest -s tests/docker/test_containers.py
