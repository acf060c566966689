"""`SLOTWATCH_SHARD=i/n`: which targets of a shared targets file replica i of n polls.

A target belongs to shard `hashmod(name, n)`: the last 8 bytes of the MD5 of its name, read
big-endian, modulo n. That is Prometheus' `hashmod` relabel action on the target name, so a
fleet can be split across replicas with no coordination, every target in exactly one shard, and
the split reproduced anywhere (a Prometheus relabel rule, a shell one-liner) from the name alone.
Adding a replica moves about 1/n of the targets; renaming a target may move it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

_SHARD = re.compile(r"(\d{1,6})/(\d{1,6})")


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return hashmod(name, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`"i/n"` -> Shard; raises ValueError with a one-line message that names the rule."""
    found = _SHARD.fullmatch(text.strip())
    if found is None:
        raise ValueError("must be i/n, e.g. 0/2 and 1/2 for two replicas (i counts from 0)")
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError("must be i/n with 0 <= i < n (i counts from 0)")
    return Shard(index, count)


def hashmod(name: str, modulus: int) -> int:
    """Prometheus' hashmod: the MD5's lower 64 bits (its last 8 bytes) modulo `modulus`."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


def share(targets: Iterable[T], shard: Shard | None) -> tuple[T, ...]:
    """The targets `shard` polls, in their configured order; all of them without a shard."""
    return tuple(t for t in targets if shard is None or shard.owns(t.name))
