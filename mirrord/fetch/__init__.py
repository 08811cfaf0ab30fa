"""Getting bytes from the origin: HTTP client, retries, traffic shaping, download workers."""
