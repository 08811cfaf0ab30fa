"""The published tree: publish plans, atomic publishing, recovery and tree checks."""
