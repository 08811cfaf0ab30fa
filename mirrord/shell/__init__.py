"""The process shell: the daemon, its assembly, control socket, metrics endpoint and CLI."""
