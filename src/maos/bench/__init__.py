"""Benchmarks behind ``maos bench``: each prints ratios measured side by side in one run."""
