"""The Alpine formats: tar streams, signatures, APKINDEX and apk v2 packages (pure)."""
