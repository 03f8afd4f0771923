"""The HTTP/1.1 edge below FastAPI: malformed requests answered in the JSON error shape, and draining on stop.

uvicorn answers what h11 cannot parse (a NUL in a header, two Content-Lengths, a request line or headers over
h11's 16 KiB buffer) itself, with a plain-text 400 that FastAPI never sees; `JsonErrorH11Protocol` answers the
same 400 as `{"error": {"code": "bad_request", "message": ...}}` naming h11's reason. `DrainingMiddleware` marks
every answer `Connection: close` once the gateway is stopping, so keep-alive clients reconnect instead of
sending their next request into a socket that is about to close.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 2.0
MAX_REASON_CHARS = 200  # h11's reason may quote the offending bytes (a 1 MB URL): keep the answer short


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, except that a request h11 rejects gets tlserve's JSON error body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol_error: h11.RemoteProtocolError | None = None
        self.lingering = False
        parse_next_event = self.conn.next_event

        def next_event() -> Any:
            try:
                return parse_next_event()
            except h11.RemoteProtocolError as exc:
                self.protocol_error = exc  # uvicorn keeps only a generic message; remember h11's reason
                raise

        self.conn.next_event = next_event  # type: ignore[method-assign]

    def send_400_response(self, msg: str) -> None:
        reason = str(self.protocol_error) if self.protocol_error is not None else msg
        if reason == "Receive buffer too long":
            reason = f"the request line and headers exceed {self.conn._max_incomplete_event_size} bytes"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + "..."
        body = json.dumps({"error": {"code": "bad_request", "message": f"malformed HTTP request: {reason}"}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self._linger()

    def _linger(self) -> None:
        """Close our side but read (and drop) what the client still sends for a moment: closing a socket with
        unread data resets it, and the client would lose the answer (a 1 MB URL is still arriving)."""
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self.lingering:
            super().data_received(data)


class DrainingMiddleware:
    """Adds `Connection: close` to every answer once `draining` is set (the gateway is stopping)."""

    def __init__(self, app: ASGIApp, draining: asyncio.Event) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.draining.is_set():
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
