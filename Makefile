# Developer commands. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test venv run bench clean

venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[test]"

# Every test on the optimised kernels, then the kernel tests again on a build with bounds checking.
test: venv
	NNCORE_REQUIRE_KERNELS=1 $(BIN)/python -m pytest
	NNCORE_KERNEL_DEBUG=1 $(BIN)/pip install -e .
	NNCORE_REQUIRE_KERNELS=1 $(BIN)/python -m pytest tests/test_kernels.py tests/test_recurrent.py -q
	$(BIN)/pip install -e .

run: venv
	$(BIN)/python -m flows.nightly

clean:
	rm -rf build *.egg-info kernels/*.c kernels/*.so
