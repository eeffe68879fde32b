"""Benchmarks of llama-docker against the tools a user would otherwise use.

`python3 -m bench` runs them all (or the ones named), records each result in
docs/benchmarks.json and renders docs/BENCHMARKS.md from it; every figure is a ratio of two
things measured side by side in the same run (this machine is small and noisy).
"""
