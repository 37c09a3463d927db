# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv with uv (installing uv with pip if it is missing) and syncs it from uv.lock.

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: demo test lint browser bench

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as in CI) every process would otherwise compile torch anew.
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --compile-bytecode
	@touch $@

demo: .venv/.synced
	$(UV) run --locked dlforge demo

test: .venv/.synced browser
	$(UV) run --locked ruff check .
	$(UV) run --locked lint-imports
	$(UV) run --locked pytest

# The report test renders report.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: .venv/.synced
	$(UV) run --locked ruff check .
	$(UV) run --locked lint-imports

bench: .venv/.synced
	$(UV) run --locked python benchmarks/trainer_overhead.py
