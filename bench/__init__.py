"""Benchmarks of the GPU cost pipeline: `make bench`, or `python bench/run.py --only NAME`."""
