"""One gzip stream from parts compressed on their own, so a part that did not change is not
compressed again (RFC 1951, RFC 1952).

A segment is raw deflate flushed to a byte boundary (`Z_SYNC_FLUSH`), never final, with no
back-reference outside itself: segments laid end to end are one valid deflate stream, as
parallel gzip writers build theirs. `ending` closes the stream with a final segment and the
trailer, whose CRC-32 of the whole text is combined from the segments' own CRCs and lengths
(zlib's `crc32_combine`, which Python's `zlib` does not offer), so no text is needed again once
it is compressed.

`Stream` keeps a text of parts (a render's families) that way: a large part is a segment of its
own and its text is let go; short neighbours share a segment (each one alone would compress far
worse: 13 KiB of a 1-slot body came to 7.7 KiB as 40 segments, 3.4 as one) and their texts are
kept, so their segment can be made again when one of them changes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# 1f 8b: gzip; 08: deflate; no flags; no time; no extra flags; 03: Unix (what zlib itself writes).
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
_POLY = 0xEDB88320  # the CRC-32 polynomial, bit-reflected
_X0 = 1 << 31  # the polynomial 1 (x^0), reflected
SMALL = 4096  # a part shorter than this shares a segment with its short neighbours
RUN = 65536  # the most text of short parts one segment holds
_MIN_WBITS = 9  # the smallest window raw deflate allows (512 bytes)


def _multiply(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC polynomial (zlib's `multmodp`); `a` is not 0."""
    m, product = _X0, 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    """x^(2^n) modulo the polynomial, for n from 0 to 31 (zlib's `x2n_table`)."""
    table, p = [], _X0 >> 1  # x^1
    for _ in range(32):
        table.append(p)
        p = _multiply(p, p)
    return tuple(table)


_X2N = _powers()


def shift(length: int) -> int:
    """x^(8 * length) modulo the polynomial: what appending `length` bytes does to a CRC."""
    p, k = _X0, 3
    while length:
        if length & 1:
            p = _multiply(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


def combine(crc: int, then_crc: int, then_shift: int) -> int:
    """The CRC-32 of a text whose CRC-32 is `crc` followed by one whose CRC-32 is `then_crc`
    and whose `shift` of its length is `then_shift`."""
    return _multiply(then_shift, crc) ^ then_crc


@dataclass(frozen=True, slots=True)
class Segment:
    """A text compressed as one non-final, byte-aligned raw deflate segment."""

    data: bytes
    crc: int  # CRC-32 of the text
    size: int  # length of the text
    shift: int  # `shift(size)`, kept so that combining costs one multiplication


def _compressor(size: int, level: int) -> zlib._Compress:
    """A raw deflate compressor whose window and hash fit a text of `size` bytes: a full one
    (32 KiB window, some 270 KiB of state) for a 2 KiB text took 62 us to set up, where one
    sized to it takes 4 and compresses it as well. Any deflate reader's 32 KiB window reads
    what a smaller one wrote."""
    bits = min(max(size.bit_length(), _MIN_WBITS), zlib.MAX_WBITS)
    return zlib.compressobj(level, zlib.DEFLATED, -bits, max(1, bits - 7))


def segment(text: bytes, level: int) -> Segment:
    compressor = _compressor(len(text), level)
    data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Segment(data, zlib.crc32(text), len(text), shift(len(text)))


def crc_of(segments: Iterable[Segment]) -> tuple[int, int]:
    """The CRC-32 and the length of the segments' texts, one after the other."""
    crc = size = 0
    for part in segments:
        crc = combine(crc, part.crc, part.shift)
        size += part.size
    return crc, size


def ending(text: bytes, crc: int, size: int, level: int) -> bytes:
    """`text` as the stream's final segment, and the trailer of a stream whose texts before it
    have CRC-32 `crc` and length `size`."""
    compressor = _compressor(len(text), level)
    data = compressor.compress(text) + compressor.flush()
    whole = combine(crc, zlib.crc32(text), shift(len(text)))
    return data + struct.pack("<II", whole, (size + len(text)) & 0xFFFFFFFF)


def inflated(segments: bytes | memoryview) -> bytes:
    """The text of segments laid end to end (their stream so far, without the header)."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(segments)


class Stream:
    """A text of parts, kept as gzip segments; `update` replaces the parts (None: a part is as
    at the last update) and compresses again only the segments whose text changed. Not
    thread-safe. After `update` raises, start a new Stream: this one is not what was given."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._sizes: list[int] = []
        self._short: list[bytes | None] = []  # the texts of short parts; None for the others
        self._runs: dict[tuple[int, int], Segment] = {}  # parts [i, j) and their segment
        self.data = HEADER  # the gzip header, then every segment
        self.crc = 0  # CRC-32 of the whole text
        self.size = 0  # its length

    def update(self, parts: Sequence[bytes | None]) -> None:
        if len(parts) != len(self._sizes) and None in parts:
            raise ValueError("a part said to be unchanged was never given")
        sizes = [len(p) if p is not None else self._sizes[i] for i, p in enumerate(parts)]
        texts = [p if p is not None else self._short[i] for i, p in enumerate(parts)]
        runs: dict[tuple[int, int], Segment] = {}
        start = 0
        while start < len(parts):
            end = start + 1
            if sizes[start] < SMALL:
                total = sizes[start]
                while end < len(parts) and sizes[end] < SMALL and total + sizes[end] <= RUN:
                    total += sizes[end]
                    end += 1
            kept = self._runs.get((start, end))
            if kept is None or any(p is not None for p in parts[start:end]):
                run = texts[start:end]
                if None in run:  # a long part alone in its run is given or kept whole
                    raise ValueError("the text of a changed segment was not kept")
                kept = segment(b"".join(run), self._level)  # type: ignore[arg-type]
            runs[(start, end)] = kept
            start = end
        segments = list(runs.values())
        self._sizes, self._runs = sizes, runs
        self._short = [t if n < SMALL else None for t, n in zip(texts, sizes, strict=True)]
        self.crc, self.size = crc_of(segments)
        self.data = b"".join([HEADER, *[s.data for s in segments]])
