"""Benchmarks of the convmixer library against the official pipeline and model (issue 6).

    python -m benchmarks.run            # everything: table on screen, JSON in book/results/perf/
    python -m benchmarks.run --only step --repeats 5
"""
