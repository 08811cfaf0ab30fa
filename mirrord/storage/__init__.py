"""Content-addressed objects, the state database and durable files (local disk I/O)."""
