"""Benchmarks of vlm_collate: scripts that print tables and write a plot (see run_all.py)."""
