"""Benchmarks of llama-docker against the tools a user would otherwise use.

`python3 -m bench` runs them all and writes docs/BENCHMARKS.md; every figure is a ratio of
two things measured side by side in the same run (this machine is small and noisy).
"""

import os
from pathlib import Path

# The lab module reads this at import: a lab state of our own, apart from the tests' one.
os.environ.setdefault("LLAMA_LAB_DIR", str(Path(__file__).resolve().parents[1] / ".lab-bench"))
