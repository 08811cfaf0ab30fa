"""Foundations every layer uses: values, errors, clock, units, configuration, metrics, logs.

Nothing here does network or storage I/O, and nothing here imports another
mirrord package.
"""
