"""mirrord: a tier-1 mirror daemon for Alpine-style package repositories."""

__version__ = "0.1.0"
