"""A Kafka producer of the wire format itself, for records no client library
writes: header names that are not UTF-8, for one. A Java or Go producer, or a
proxy, can write any bytes there; librdkafka's Python binding cannot, so tests
that need such a record build it here.

Only what those tests need: one Produce request (v3, record batch v2,
uncompressed, acks=1) with a few records to one partition of a one-broker
cluster, answered with the partition's error code and base offset.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

# CRC-32C (Castagnoli), reflected, as record batches carry it.
_CRC32C_POLY = 0x82F63B78
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _CRC32C_POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(n: int) -> bytes:
    """A zigzag varint, as record fields are written."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(b: bytes | None) -> bytes:
    return _varint(-1) if b is None else _varint(len(b)) + b


RawRecord = tuple[bytes | None, bytes | None, Sequence[tuple[bytes, bytes | None]]]


def record_batch(records: Sequence[RawRecord], timestamp_ms: int | None = None) -> bytes:
    """A record batch (magic 2) of ``(key, value, headers)``; header names are
    bytes written as they are."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = bytearray()
    for i, (key, value, headers) in enumerate(records):
        rec = bytearray(b"\x00")  # attributes
        rec += _varint(0) + _varint(i)  # timestamp delta, offset delta
        rec += _bytes_field(key) + _bytes_field(value)
        rec += _varint(len(headers))
        for name, hv in headers:
            rec += _varint(len(name)) + name + _bytes_field(hv)
        body += _varint(len(rec)) + rec
    after_crc = (
        struct.pack(">hiqqqhii", 0, len(records) - 1, ts, ts, -1, -1, -1, len(records)) + body
    )
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def produce_raw(bootstrap: str, topic: str, partition: int, records: Sequence[RawRecord],
                timeout: float = 10.0) -> int:  # fmt: skip
    """Send ``records`` to ``topic``/``partition`` on the broker at ``bootstrap``
    (which must lead it: tests run one broker); the base offset they got.

    Raises:
        RuntimeError: the broker answered with an error code.
    """
    batch = record_batch(records)
    body = (struct.pack(">h", -1)  # no transactional id
            + struct.pack(">hi", 1, int(timeout * 1000))  # acks=1
            + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">i", 1) + struct.pack(">i", partition)
            + struct.pack(">i", len(batch)) + batch)  # fmt: skip
    header = struct.pack(">hhi", 0, 3, 1) + _string("outbox-tests-raw")  # Produce v3
    request = header + body
    host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(sock, 4))[0]
        answer = _read(sock, size)
    # correlation id, [topic, [partition, error, base offset, log append time]], throttle
    pos = 4 + 4
    (name_len,) = struct.unpack_from(">h", answer, pos)
    pos += 2 + name_len + 4
    _part, error, base_offset = struct.unpack_from(">ihq", answer, pos)
    if error:
        raise RuntimeError(f"the broker refused the raw produce: Kafka error code {error}")
    return int(base_offset)


def _read(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("the broker closed the connection")
        buf += chunk
    return bytes(buf)
