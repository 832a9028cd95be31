# The two commands of the README. Each creates or reuses the venv (scripts/env.sh),
# builds the Rust engine in place and runs with this clone's python/ first on the path.
# Quiet on success: only the commands' own output (and env.sh's progress lines on a
# first run). Nothing here installs system packages except the opt-in `make browser`.
.PHONY: demo test test-fast browser bench lint fmt

RUN = PYTHONPATH="$(CURDIR)/python$${PYTHONPATH:+:$$PYTHONPATH}"

demo:
	@venv=$$(bash scripts/env.sh) && $(RUN) "$$venv/bin/vlm-collate" demo

test:
	@venv=$$(bash scripts/env.sh) && cargo test --quiet && $(RUN) "$$venv/bin/python" -m pytest -q

# The Python tests without the ones marked slow (no cargo test).
test-fast:
	@venv=$$(bash scripts/env.sh) && $(RUN) "$$venv/bin/python" -m pytest -m "not slow" -q

# Opt-in: a headless Chromium (Debian/Ubuntu: apt-get install chromium, as root or with
# sudo) for the test of the `inspect --html` view; without it `make test` skips that test.
browser:
	@bash scripts/install_browser.sh

bench:
	@venv=$$(bash scripts/env.sh) && $(RUN) "$$venv/bin/python" -m benches.run_all

lint:
	@venv=$$(bash scripts/env.sh) && cargo fmt --check \
		&& cargo clippy --quiet --all-targets --features python -- -D warnings \
		&& "$$venv/bin/ruff" check python tests benches \
		&& "$$venv/bin/ruff" format --check python tests benches \
		&& $(RUN) "$$venv/bin/python" -m mypy.stubtest vlm_collate._engine

fmt:
	@venv=$$(bash scripts/env.sh) && cargo fmt && "$$venv/bin/ruff" format python tests benches && "$$venv/bin/ruff" check --fix python tests benches
