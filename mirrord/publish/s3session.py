"""The HTTP session botocore sends the bucket's requests through: bodies go out uncopied.

aiohttp sends a ``bytearray`` body as a ``BytesPayload``, which slices it to
the content length (a copy of every byte), then joins the buffered request
headers with it into one write (a second copy, on Python before 3.12.9).
Each copy is a fresh buffer, and every byte uploaded passed through both on
the event loop that serves all uploads. Here the headers go out alone and
the body follows as a view of the bytes already read: the transport sends
from them directly, and keeps a view of what the socket did not take yet.
"""

from __future__ import annotations

import copy
from typing import Any

from aiobotocore.httpsession import AIOHTTPSession
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload
from botocore.awsrequest import AWSPreparedRequest

# Below this a body rides in the headers' write: one small copy is cheaper than two writes.
UNCOPIED_FROM = 64 * 1024


class WholeBody(BytesPayload):
    """A body sent as it lies in memory: the headers first, then a view of the bytes."""

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        writer.send_headers()
        await writer.write(view)


class UncopiedBodySession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped here
    """``AIOHTTPSession`` that sends large ``bytearray`` bodies as ``WholeBody``."""

    async def send(self, request: AWSPreparedRequest) -> Any:
        body = request.body
        if isinstance(body, bytearray) and len(body) >= UNCOPIED_FROM:
            # A copy of the request, not the request: before a retry botocore rewinds
            # the original's body (reset_stream), which a payload cannot do.
            request = copy.copy(request)
            request.body = WholeBody(body)
        return await super().send(request)
