"""Benchmarks: our code side by side with a baseline in the same run (``python -m benchmarks.X``).

Not part of the test run. See ``benchmarks/README.md``.
"""
