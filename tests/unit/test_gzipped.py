"""A gzip stream laid from parts compressed one by one is the stream of their text, with the
CRC-32 combined from the parts' (tests/integration/test_http.py has the gzip command read a
daemon's)."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from slotwatch.serve import gzipped

PARTS = st.lists(
    st.one_of(
        st.binary(max_size=3000),
        st.builds(
            lambda line, n: line * n, st.binary(min_size=1, max_size=40), st.integers(0, 3000)
        ),
    ),
    max_size=8,
)


def _stream(parts: list[bytes], tail: bytes) -> bytes:
    segments = [gzipped.segment(part, 3) for part in parts]
    crc, size = gzipped.crc_of(segments)
    body = b"".join(segment.data for segment in segments)
    return gzipped.HEADER + body + gzipped.ending(tail, crc, size, 3)


@settings(max_examples=300, deadline=None)
@given(PARTS, st.binary(max_size=500))
@example([], b"")
@example([b""], b"")
@example([b"a" * 70_000, b"", b"b"], b"# EOF\n")
def test_the_parts_then_the_tail_read_back_as_one_text(parts: list[bytes], tail: bytes) -> None:
    segments = [gzipped.segment(part, 3) for part in parts]
    assert gzipped.crc_of(segments) == (zlib.crc32(b"".join(parts)), sum(map(len, parts)))
    assert gzipped.inflated(b"".join(s.data for s in segments)) == b"".join(parts)
    assert gzip.decompress(_stream(parts, tail)) == b"".join(parts) + tail


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_combining_two_crcs_is_the_crc_of_the_two_texts(first: bytes, then: bytes) -> None:
    combined = gzipped.combine(zlib.crc32(first), zlib.crc32(then), gzipped.shift(len(then)))
    assert combined == zlib.crc32(first + then)


def _parts(rng: random.Random, count: int) -> list[bytes]:
    sizes = (0, 10, 200, gzipped.SMALL - 1, gzipped.SMALL, 20_000, 70_000)
    return [
        b"# TYPE f%d gauge\n" % k + b"f%d 1.0\n" % rng.randrange(99) * (rng.choice(sizes) // 8)
        for k in range(count)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_of_changing_parts_reads_back_as_their_text_every_time(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)  # noqa: S311 - seeded, reproducible fixtures, not secrets
    made: list[int] = []
    real = gzipped.segment

    def counted(text: bytes, level: int) -> gzipped.Segment:
        made.append(len(text))
        return real(text, level)

    monkeypatch.setattr(gzipped, "segment", counted)
    stream = gzipped.Stream(3)
    current = _parts(rng, 12)
    stream.update(current)
    for _ in range(15):
        fresh = _parts(rng, 12)
        given_parts: list[bytes | None] = []
        for k in range(12):  # about a third change each update; the others are said unchanged
            if rng.random() < 0.35:
                current[k] = fresh[k]
                given_parts.append(fresh[k])
            else:
                given_parts.append(None)
        del made[:]
        stream.update(given_parts)
        text = b"".join(current)
        assert (stream.crc, stream.size) == (zlib.crc32(text), len(text))
        assert gzip.decompress(
            stream.data + gzipped.ending(b"# EOF\n", stream.crc, stream.size, 3)
        ) == (text + b"# EOF\n")
        # What is compressed again is the changed parts and their short neighbours, no more.
        changed = sum(len(p) for p in given_parts if p is not None)
        short = sum(len(p) for p in current if len(p) < gzipped.SMALL)
        assert sum(made) <= changed + short


def test_a_stream_told_nothing_changed_compresses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = gzipped.Stream(3)
    parts = _parts(random.Random(1), 20)  # noqa: S311 - seeded fixture
    stream.update(parts)
    before = stream.data
    monkeypatch.setattr(gzipped, "segment", lambda *_: pytest.fail("compressed again"))
    stream.update([None] * 20)
    assert stream.data == before


def test_a_part_said_unchanged_that_was_never_given_is_refused() -> None:
    stream = gzipped.Stream(3)
    with pytest.raises(ValueError, match="never given"):
        stream.update([b"a", None])


def test_short_parts_share_a_segment_and_compress_as_well_as_one_text() -> None:
    parts = [
        b"# HELP slotwatch_f%d Help.\n# TYPE slotwatch_f%d gauge\nslotwatch_f%d 1.0\n" % (k, k, k)
        for k in range(40)
    ]
    stream = gzipped.Stream(3)
    stream.update(parts)
    whole = zlib.compressobj(3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    alone = whole.compress(b"".join(parts)) + whole.flush()
    assert len(stream.data) < len(alone) * 1.1
