"""Benchmarks: mirrord against the tools operators use today (see README)."""
