"""Coordination: the per-arch pipeline poll -> plan -> acquire -> publish, and its schedule."""
