"""pyotp's benchmark suite: pytest-benchmark tests (``pytest bench``) and the one-shot
comparison report (``python -m bench.compare``). The workloads themselves, for pyotp and
every peer, live in :mod:`bench.workloads`; see docs/benchmarks.md."""
