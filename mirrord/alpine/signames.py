"""Names of apk signature members: ``.SIGN.RSA.<key>`` (SHA-1), ``.SIGN.RSA256.<key>``,
``.SIGN.RSA512.<key>`` (the three apk-tools accepts).

Kept apart from ``signing`` so that code which only needs to recognise a
signature stream (the package digester, fetch workers) does not load the
cryptography library.
"""

from __future__ import annotations

SIGNATURE_PREFIXES = {".SIGN.RSA512.": "sha512", ".SIGN.RSA256.": "sha256", ".SIGN.RSA.": "sha1"}


def parse_signature_name(member_name: str) -> tuple[str, str] | None:
    """``.SIGN.RSA.<key>`` -> (key, "sha1"); anything else -> None."""
    for prefix, digest in SIGNATURE_PREFIXES.items():
        if member_name.startswith(prefix):
            return member_name[len(prefix) :], digest
    return None
