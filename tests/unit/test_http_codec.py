"""The HTTP/1.1 response codec on its own: fed bytes however they are split, bounded in bytes,
interim answers and work (no sockets)."""

from __future__ import annotations

import random

import pytest

from hw_picollector.devices.transport import (
    MAX_EXCHANGE_BYTES,
    MAX_INTERIM_ANSWERS,
    ProtocolError,
    ResponseParser,
)

Result = tuple[int, bool, bytes, bytes]

ANSWERS: list[tuple[str, bytes, Result]] = [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":12}",
     (200, True, b'{"a":12}', b"")),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\n{\"a\r\n5\r\n\":12}\r\n0\r\nX-Trailer: y\r\n\r\n",
     (200, True, b'{"a":12}', b"")),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\nX: y\r\n\r\n"
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\nConnection: close\r\n\r\nnope",
     (404, False, b"nope", b"")),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", (204, True, b"", b"")),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", (200, True, b"", b"")),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, False, b"{}", b"")),
    ("GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
     (200, True, b"{}", b"")),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", (200, True, b"{}", b"extra")),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (n, b"z" * n) for n in range(1, 300)) + b"0\r\n\r\n",
     (200, True, b"z" * sum(range(1, 300)), b"")),
]
UNFRAMED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1, 2, 3]"


def feed(raw: bytes, sizes: list[int] | None, method: str = "GET",
         eof: bool = False) -> Result:
    """Feeds ``raw`` in pieces of ``sizes`` (cycled; None: whole) and returns the result."""
    parser = ResponseParser(method)
    pos, i, done = 0, 0, False
    while pos < len(raw) and not done:
        size = len(raw) if sizes is None else sizes[i % len(sizes)]
        done = parser.feed(raw[pos:pos + size])
        pos, i = pos + size, i + 1
    if not done and eof:
        parser.feed_eof()
        done = True
    assert done and parser.done, "the answer is not complete"
    return parser.status, parser.keep_alive, parser.body, parser.rest + raw[pos:]


def splits(length: int) -> list[list[int] | None]:
    rng = random.Random(length)
    return [None, [1], [2], [3], [7], [64], [rng.randint(1, 40) for _ in range(50)]]


@pytest.mark.parametrize(("method", "raw", "expected"), ANSWERS)
def test_any_split_gives_the_same_answer(method: str, raw: bytes, expected: Result) -> None:
    for sizes in splits(len(raw)):
        assert feed(raw, sizes, method) == expected, sizes


def test_a_body_without_framing_ends_with_the_connection() -> None:
    for sizes in splits(len(UNFRAMED)):
        assert feed(UNFRAMED, sizes, eof=True) == (200, False, b"[1, 2, 3]", b"")
    parser = ResponseParser("GET")
    assert not parser.feed(UNFRAMED)
    assert not parser.done


@pytest.mark.parametrize(("raw", "text", "nothing"), [
    (b"", "without response", True),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "middle of its answer", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "middle of its answer", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "middle", False),
])
def test_closed_too_early(raw: bytes, text: str, nothing: bool) -> None:
    parser = ResponseParser("GET")
    assert not parser.feed(raw)
    with pytest.raises(ProtocolError, match=text) as err:
        parser.feed_eof()
    assert err.value.nothing_received is nothing


def broken(raw: bytes, sizes: list[int] | None) -> str:
    parser = ResponseParser("GET")
    with pytest.raises(ProtocolError) as err:
        pos = 0
        while True:
            size = len(raw) if sizes is None else sizes[0]
            assert pos < len(raw), "no error"
            assert not parser.feed(raw[pos:pos + size])
            pos += size
    return str(err.value)


CHUNK_EXT = b"1;ext=" + b"x" * 1000 + b"\r\n \r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(("raw", "text"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", "answer larger than 1048576 bytes"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000, "header block larger than"),
    (CONTINUE * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
     f"more than {MAX_INTERIM_ANSWERS} interim"),
    # everything received counts: chunk metadata ...
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNK_EXT * 1100 + b"0\r\n\r\n",
     "answer larger than 1048576 bytes"),
    # ... trailers ...
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
     + (b"X-T: " + b"t" * 1000 + b"\r\n") * 1100 + b"\r\n", "answer larger than 1048576 bytes"),
    # ... and the headers of the answer as well as its body
    (b"HTTP/1.1 200 OK\r\nX: " + b"h" * 60_000 + b"\r\nContent-Length: 1000000\r\n\r\n"
     + b" " * 1_000_000, "answer larger than 1048576 bytes"),
])
def test_broken_and_oversized_answers(raw: bytes, text: str) -> None:
    for sizes in (None, [1] if len(raw) < 200_000 else [37], [1000], [65536]):
        assert text in broken(raw, sizes)


def test_the_byte_budget_is_per_exchange() -> None:
    assert MAX_EXCHANGE_BYTES == 1 << 20
    body = b" " * (MAX_EXCHANGE_BYTES - 100)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert feed(raw, [65536])[2] == body  # fits, headers included
    assert feed(raw, [65536])[2] == body  # a new exchange, a new budget


def test_the_work_is_linear_in_the_bytes_received() -> None:
    """Parsing never starts over: after every piece the parser holds at most one unfinished
    element (parsed bytes are dropped) and its next search starts at the end of what it has
    already searched. Counted, not timed: the speed itself is in ``make bench``."""
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"10\r\n0123456789abcdef\r\n" * 4_000 + b"0\r\n\r\n")
    parser = ResponseParser()
    held = []
    for pos in range(0, len(raw), 7):
        if parser.feed(raw[pos:pos + 7]):
            break
        held.append(len(parser._buf))
    assert parser.done and parser.body == b"0123456789abcdef" * 4_000
    assert max(held) <= 64, max(held)  # the header block at most, plus the piece that ended it

    header = b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"h" * 3_000 + b"\r\n\r\n{}"
    parser = ResponseParser()
    for pos in range(len(header) - 2):  # one byte at a time through a long header block
        assert not parser.feed(header[pos:pos + 1])
        assert parser._scan >= len(parser._buf) - 3, "the header search would start over"


def test_a_flood_of_tiny_chunks_is_refused() -> None:
    """Each chunk line costs work: a flood of one-byte chunks stops at MAX_CHUNK_LINES, long
    before the byte budget would."""
    from hw_picollector.devices.transport import MAX_CHUNK_LINES, ProtocolError, ResponseParser

    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="chunk or trailer lines"):
        parser.feed(head + b"1\r\nx\r\n" * (MAX_CHUNK_LINES + 1) + b"0\r\n\r\n")
    ok = ResponseParser()
    assert ok.feed(head + b"1\r\nx\r\n" * (MAX_CHUNK_LINES - 2) + b"0\r\n\r\n")  # + end, trailer
    assert ok.body == b"x" * (MAX_CHUNK_LINES - 2)
