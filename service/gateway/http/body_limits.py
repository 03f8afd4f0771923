"""Row limits of JSON predict bodies enforced while the body streams in, before anything is parsed or converted.

A 32 MB body of pixel values takes seconds to parse and convert; counting its rows chunk by chunk refuses an
over-rows body as soon as row `max_rows + 1` arrives. The count only needs bracket depth, so each chunk is scanned
with numpy; the few events near the top of the document (a row opening) are walked in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request

from service.gateway.errors import PayloadTooLarge

_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# Containers whose children are rows: {"instances": [...]}, {"inputs": [...]} and {"inputs": {"name": [...]}}.
_ROW_PARENTS = (("{", "["), ("{", "{", "["))
_MAX_ESCAPES_PER_CHUNK = 4096  # past this, walking escapes in Python costs more than it saves: stop counting


def too_many_rows(rows: int, max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body has at least {rows} rows (images), more than the limit of {max_rows}")


class RowCounter:
    """Counts the rows of a TF Serving / `/predict` JSON body chunk by chunk (a lower bound: rows that are
    scalars are not counted); `feed` raises PayloadTooLarge once some row list exceeds `max_rows`."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the previous chunk ended inside a string on a backslash
        self.stack: list[str] = []  # container types of the first three levels
        self.rows: dict[int, int] = {}  # depth of a row list's children → rows seen so far
        self.gave_up = False

    def feed(self, chunk: bytes) -> None:
        if self.gave_up or not chunk:
            return
        data = np.frombuffer(chunk, dtype=np.uint8)
        quotes = self._unescaped_quotes(data)
        if quotes is None:
            self.gave_up = True
            return
        folded = data | 0x20  # maps "[" onto "{" and "]" onto "}" (and nothing else onto either)
        brackets = np.flatnonzero((folded == _OPEN[1]) | (folded == _CLOSE[1]))
        # A bracket is inside a string when an odd number of unescaped quotes precede it (plus the carried state).
        outside = (np.searchsorted(quotes, brackets) + int(self.in_string)) % 2 == 0
        self.in_string = bool((len(quotes) + int(self.in_string)) % 2)
        brackets = brackets[outside]
        kinds = data[brackets]
        opens = (kinds == _OPEN[0]) | (kinds == _OPEN[1])
        delta = np.where(opens, 1, -1)
        after = self.depth + np.cumsum(delta)
        before = after - delta
        events = np.flatnonzero((opens & (before <= 3)) | (~opens & (after <= 3)))
        for index in events.tolist():
            self._event(chr(kinds[index]), int(before[index]), int(after[index]))
        if len(after):
            self.depth = int(after[-1])
        if self.depth < 0:
            self.gave_up = True  # not JSON; the parser will say so

    def _unescaped_quotes(self, data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        """Positions of the quotes that open or close strings; None when the chunk has too many escapes to walk."""
        quotes = np.flatnonzero(data == _QUOTE)
        backslashes = np.flatnonzero(data == _BACKSLASH)
        if not len(backslashes) and not self.escaped:
            return quotes
        if len(backslashes) > _MAX_ESCAPES_PER_CHUNK:
            return None
        # Walk quotes and backslashes in order: a backslash inside a string escapes the next byte.
        kept = []
        in_string = self.in_string
        escaped_at = 0 if self.escaped else -1  # the position of the byte a backslash escapes
        for position in np.union1d(quotes, backslashes).tolist():
            if position == escaped_at:
                continue
            if data[position] == _BACKSLASH:
                escaped_at = position + 1 if in_string else -1
            else:
                kept.append(position)
                in_string = not in_string
        self.escaped = escaped_at == len(data)
        return np.asarray(kept, dtype=np.int64)

    def _event(self, char: str, before: int, after: int) -> None:
        if char in "]}":
            del self.stack[after:]
            return
        parent = tuple(self.stack[:before])
        if parent in _ROW_PARENTS and len(parent) == before:
            self.rows[before] = self.rows.get(before, 0) + 1
            if self.rows[before] > self.max_rows:
                raise too_many_rows(self.rows[before], self.max_rows)
        if before <= 2:
            del self.stack[before:]
            self.stack.append(char)
            self.rows.pop(before + 1, None)  # a new container: its rows start from zero


async def read_json_body(request: Request, max_rows: int) -> bytes:
    """The whole body, refused (413) as soon as it shows more than `max_rows` rows."""
    counter = RowCounter(max_rows)
    chunks = []
    async for chunk in request.stream():
        counter.feed(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def check_json_rows(payload: Any, max_rows: int) -> None:
    """After parsing, before converting: the same limit on what the streaming count could not see."""
    if not isinstance(payload, dict):
        return
    lists = [payload.get("instances"), payload.get("inputs")]
    if isinstance(payload.get("inputs"), dict):
        lists.extend(payload["inputs"].values())
    for value in lists:
        if isinstance(value, list) and len(value) > max_rows:
            raise too_many_rows(len(value), max_rows)
