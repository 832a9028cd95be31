# The two commands of the README. Each creates or reuses the venv (scripts/env.sh)
# and builds the Rust engine first.
.PHONY: demo test bench lint fmt

demo:
	@venv=$$(bash scripts/env.sh) && "$$venv/bin/vlm-collate" demo

test:
	@venv=$$(bash scripts/env.sh) && cargo test --quiet && "$$venv/bin/python" -m pytest -q

bench:
	@venv=$$(bash scripts/env.sh) && "$$venv/bin/vlm-collate" bench

lint:
	@venv=$$(bash scripts/env.sh) && cargo fmt --check && cargo clippy --quiet --all-targets --features python -- -D warnings && "$$venv/bin/ruff" check python tests benches && "$$venv/bin/ruff" format --check python tests benches

fmt:
	@venv=$$(bash scripts/env.sh) && cargo fmt && "$$venv/bin/ruff" format python tests benches && "$$venv/bin/ruff" check --fix python tests benches
