# The two commands of the README. Each creates or reuses the venv (scripts/env.sh),
# builds the Rust engine in place and runs with this clone's python/ first on the path.
# Quiet on success: only the commands' own output.
.PHONY: demo test bench lint fmt

RUN = PYTHONPATH="$(CURDIR)/python$${PYTHONPATH:+:$$PYTHONPATH}"

demo:
	@venv=$$(bash scripts/env.sh) && $(RUN) "$$venv/bin/vlm-collate" demo

test:
	@venv=$$(bash scripts/env.sh --browser) && cargo test --quiet && $(RUN) "$$venv/bin/python" -m pytest -q

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
