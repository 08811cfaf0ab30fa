"""etcd's v3 JSON gateway through aiohttp: the few calls fleet mode needs.

Keys and values travel base64-encoded; lease ids are int64 (strings in the
answers). Every failure (no endpoint answers, an error status, a malformed
answer) becomes an ``EtcdError``; the next endpoint in the list is tried
first on a connection failure.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from mirrord.core.errors import EtcdError, EtcdLeaseLostError

REQUEST_TIMEOUT = 5.0


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _text(data: str) -> str:
    return base64.b64decode(data).decode()


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (etcd's convention)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], session: aiohttp.ClientSession) -> None:
        self.endpoints = list(endpoints)
        self._session = session
        self._current = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls, endpoints: Sequence[str], request_timeout: float = REQUEST_TIMEOUT
    ) -> AsyncIterator[EtcdClient]:
        connector = aiohttp.TCPConnector(limit=4, limit_per_host=2)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=request_timeout, connect=min(request_timeout, 2.0)),
        ) as session:
            yield cls(endpoints, session)

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: EtcdError | None = None
        for _ in self.endpoints:
            url = f"{self.endpoint}{path}"
            try:
                async with self._session.post(url, json=body) as response:
                    text = await response.text()
                    if response.status != 200:
                        lost = "requested lease not found" in text
                        error = EtcdLeaseLostError if lost else EtcdError
                        raise error(url, f"HTTP {response.status}: {text[:200]}")
            except (aiohttp.ClientError, TimeoutError) as error:
                last = EtcdError(url, str(error) or type(error).__name__)
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            try:
                answer = json.loads(text)
            except ValueError:
                raise EtcdError(url, f"not JSON: {text[:200]!r}") from None
            if not isinstance(answer, dict):
                raise EtcdError(url, f"unexpected answer: {text[:200]!r}")
            return answer
        assert last is not None
        raise last

    async def grant(self, ttl: int) -> int:
        answer = await self._call("/v3/lease/grant", {"TTL": ttl})
        try:
            return int(answer["ID"])
        except (KeyError, ValueError):
            raise EtcdError(self.endpoint, f"lease grant answered {answer!r}") from None

    async def keepalive(self, lease: int) -> int:
        """The lease's new TTL in seconds; 0 when it has expired (etcd leaves TTL out)."""
        answer = await self._call("/v3/lease/keepalive", {"ID": lease})
        result = answer.get("result", answer)
        return int(result.get("TTL", 0)) if isinstance(result, dict) else 0

    async def revoke(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": lease})

    async def put(self, key: str, value: str, lease: int | None = None) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease is not None:
            body["lease"] = lease
        await self._call("/v3/kv/put", body)

    async def delete(self, key: str) -> None:
        await self._call("/v3/kv/deleterange", {"key": _b64(key)})

    async def range_prefix(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` and its value."""
        answer = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        try:
            return {_text(kv["key"]): _text(kv.get("value", "")) for kv in answer.get("kvs", [])}
        except (KeyError, TypeError, ValueError, UnicodeDecodeError):
            raise EtcdError(self.endpoint, "malformed range answer") from None
