"""Cut texts into requests a server will accept: by count and by serialized bytes.

A request that passes the server's ``max_message_bytes`` is refused whole with
RESOURCE_EXHAUSTED before any handler runs (64 reviews of 90,000 CJK characters are 17 MB,
over the 16 MiB default), and retrying it cannot help. So the client sizes each request
from the server's advertised limits (:meth:`client.api.SentimentClient.limits`) and never
builds one the server must refuse; a single text too large for any request is a bad row.
"""

from __future__ import annotations

from collections.abc import Sequence

from client.api import ServerLimits

# Room for what :func:`request_bytes` does not count exactly (the request id's field).
ID_ALLOWANCE = 64


def _varint_bytes(value: int) -> int:
    """Bytes of ``value`` as a protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7)


def text_bytes(text: str) -> int:
    """Bytes one text adds to a request: its field tag, length prefix and UTF-8 bytes."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return 1 + _varint_bytes(size) + size


def plan_requests(texts: Sequence[str], limits: ServerLimits, batch_size: int
                  ) -> tuple[list[list[int]], list[str | None]]:
    """Group the indices of ``texts`` into requests, in order, of at most ``batch_size`` and
    ``limits.max_texts_per_request`` texts and ``limits.max_message_bytes`` bytes.

    Returns the requests and, per text, None or why it was left out: over the server's
    characters per text, or too large for any message. (Empty texts never get here: the
    readers list them as bad rows.)
    """
    count_limit = max(1, min(batch_size, limits.max_texts_per_request))
    byte_limit = limits.max_message_bytes - ID_ALLOWANCE
    requests: list[list[int]] = []
    errors: list[str | None] = []
    current: list[int] = []
    current_bytes = 0
    for index, text in enumerate(texts):
        size = text_bytes(text)
        problem = None
        if len(text) > limits.max_chars_per_text:
            problem = (f"text has {len(text)} characters; the server accepts at most {limits.max_chars_per_text} "
                       "(its --max-chars-per-text)")
        elif size > byte_limit:
            problem = (f"text is {size} bytes as UTF-8; the server accepts messages of at most "
                       f"{limits.max_message_bytes} bytes (its --max-message-bytes)")
        errors.append(problem)
        if problem is not None:
            continue
        if current and (len(current) == count_limit or current_bytes + size > byte_limit):
            requests.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        requests.append(current)
    return requests, errors
