# Developer commands. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test venv chromium postgresql run bench clean

venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[test]"

# Debian's chromium renders the Prefect and MLflow UIs in the e2e test: installed when missing
# (as root, or through sudo).
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian's chromium for the e2e test"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL server runs a throwaway database for the ledger tests (the `postgres_url` fixture):
# installed when missing, like chromium.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian's postgresql for the ledger tests"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

KERNEL_TESTS := tests/test_kernels.py tests/test_recurrent.py tests/test_models.py

# Every test on the optimised kernels (the widest SIMD vectors of this machine); then the kernel tests
# again on the wide tiles alone (NNCORE_TILES=wide: 64-byte builds have them), on a build with bounds
# checking (both tiles), on a build at every narrower width this machine runs, and on the portable
# build (SSE2, no -march=native); then the optimised build back in place.
WIDE := $(BIN)/python -c "import kernels, sys; sys.exit(kernels.build_info()['wide_tile_rows'] is None)"
test: venv chromium postgresql
	NNCORE_REQUIRE_KERNELS=1 $(BIN)/python -m pytest
	! $(WIDE) || NNCORE_TILES=wide NNCORE_REQUIRE_KERNELS=1 $(BIN)/python -m pytest $(KERNEL_TESTS) -q
	NNCORE_KERNEL_DEBUG=1 $(BIN)/pip install -q -e .
	NNCORE_REQUIRE_KERNELS=1 NNCORE_EXPECT_DEBUG=1 $(BIN)/python -m pytest $(KERNEL_TESTS) -q
	! $(WIDE) || NNCORE_TILES=wide NNCORE_REQUIRE_KERNELS=1 NNCORE_EXPECT_DEBUG=1 $(BIN)/python -m pytest $(KERNEL_TESTS) -q
	for w in $$($(BIN)/python -c "import kernels; w = kernels.build_info()['vector_bytes']; print(*[v for v in (16, 32) if v < w])"); do \
		NNCORE_VECTOR_BYTES=$$w $(BIN)/pip install -q -e . && \
		NNCORE_REQUIRE_KERNELS=1 NNCORE_EXPECT_VECTOR_BYTES=$$w $(BIN)/python -m pytest $(KERNEL_TESTS) -q || exit 1; \
	done
	NNCORE_NATIVE=0 $(BIN)/pip install -q -e .
	NNCORE_REQUIRE_KERNELS=1 NNCORE_EXPECT_NATIVE=0 $(BIN)/python -m pytest $(KERNEL_TESTS) -q
	$(BIN)/pip install -q -e .

run: venv
	$(BIN)/python -m flows.nightly

clean:
	rm -rf build *.egg-info kernels/*.c kernels/*.so
