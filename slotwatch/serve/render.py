"""The metric table (`serve.metrics`) written as /metrics text for one snapshot.

The text is byte-for-byte what prometheus_client's `generate_latest` (or its OpenMetrics twin)
writes for the same families (tests/unit/test_exposition.py holds it to that), without the
client library's own escaping of every label on every line.

Every poll makes a new snapshot, but mostly of the same slots, so a `Renderer` (one per format)
keeps between renders what the next one will likely need again:

- per scope, its subjects' label values and the `{labels} ` text of each, which every `value=`
  family of the scope writes after its name; the scope's subjects are read once per render;
- per `one_of=` family (slot state, WAL status: 11 of a slot's 25 series), the run of lines of
  each choice as a template, and which choice each subject had at the last render: a slot's
  run changes only with its state, so a family whose subjects all kept theirs is not written,
  and the runs are written from the templates only when one changed (the runs themselves, some
  600 bytes a slot, are not kept);
- per `series=` family, the `name{labels} ` of each series, by its label values;
- the text of each number, by its repr (not its value: 0.0 and -0.0 are one dict key but two
  texts), written by `number_line`, which is `floatToGoString` made quicker for ints;
- per family, what its samples were written from at the last render: when a render comes out
  the same, the family is not written at all; `render` says so with None in its place, and the
  caller (`Exposition`, which keeps each family compressed) uses what it made of the last one.

What is kept is bounded by what the last render wrote: a cache keyed by label values is cut
back to the entries that render used once it holds more than twice as many (plus `SLACK`), and
the number cache is emptied after a render that leaves more than `NUMBERS_KEPT` in it. Slots
that come and go, or are renamed, are forgotten within a render or two, however long they churn.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from prometheus_client.utils import floatToGoString

from slotwatch.serve.metrics import COUNTER, FAMILIES, Family, Labels, OneOf, Scope, Series
from slotwatch.serve.store import Snapshot

# The library's own number format (Go's, e.g. 1.7645900000123e+09), so the bytes match.
_go_float: Callable[[float], str] = floatToGoString


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _head(family: Family[Any], openmetrics: bool) -> str:
    """Its # HELP and # TYPE lines. The text format names a counter family after its samples;
    OpenMetrics without `_total`."""
    shown = (
        family.name.removesuffix("_total")
        if openmetrics and family.type == COUNTER
        else (family.name)
    )
    return (
        f"# HELP {shown} {_escape_help(family.help, openmetrics)}\n# TYPE {shown} {family.type}\n"
    )


def _sorted_labels(names: Labels) -> list[int]:
    """Indices of `names` in the order the library writes labels: sorted by name."""
    return sorted(range(len(names)), key=names.__getitem__)


def _labels_template(names: Labels) -> str:
    """`{a="%s",b="%s"} ` for the label values in `_sorted_labels(names)` order; label names
    are identifiers, so the only % are the placeholders."""
    if not names:
        return " "
    return "{" + ",".join(f'{names[i]}="%s"' for i in _sorted_labels(names)) + "} "


# A number's text, line end included, by the number's repr. The repr, not the number, is the
# key: 0.0 and -0.0 are equal (one dict key) but written differently, and every number the
# table yields (int, float, bool) has a repr that fixes what the library writes for it.
Numbers = dict[str, str]
_NO_SERIES = ""  # the text of None: the family leaves that subject's series out
_NUMBERS_SEED: dict[str, str] = {"None": _NO_SERIES}
SLACK = 64  # entries a cache may hold beyond twice what the last render used before it is cut
# Number texts carried to the next render: the figures that repeat (0, 1, +Inf, counts that did
# not move) are far fewer; beyond this it is mostly one-off figures, which are let go.
NUMBERS_KEPT = 4096
_OTHER = object()  # a one_of's current choice that is none of its choices
_EXACT = 1 << 53  # an int smaller than this in size is exactly a float, written "<int>.0"
_INF = float("inf")


def number_line(value: float, shown: str) -> str:
    """`floatToGoString(value)` and the line's end, given `shown`, the value's repr; quicker
    than the library for what the table mostly yields, byte counts (ints) and plain floats. Go
    writes a positive number of 7 or more integer digits with an exponent (1.2345678e+07)."""
    if type(value) is int and -_EXACT < value < _EXACT:
        if value < 1_000_000:
            return f"{shown}.0\n"
        fraction = shown[1:].rstrip("0")
        dot = "." if fraction else ""
        return f"{shown[0]}{dot}{fraction}e+{len(shown) - 1:02d}\n"
    finite = type(value) is float and value == value and abs(value) != _INF  # noqa: PLR0124
    if finite and (value <= 0 or shown.find(".") <= 6):
        return f"{shown}\n"
    return f"{_go_float(value)}\n"


def _number(numbers: Numbers, value: float | None, shown: str) -> str:
    """The text of `value` (whose repr is `shown`), from `numbers` or written into it."""
    text = numbers.get(shown)
    if text is None:
        text = _NO_SERIES if value is None else number_line(value, shown)
        numbers[shown] = text
    return text


def _pruned(cache: dict[Any, str], used: Collection[Any]) -> dict[Any, str]:
    """`cache` itself, or only its entries in `used` once it holds more than twice as many:
    a cache keyed by slot names must not grow while slots come and go."""
    if len(cache) <= 2 * len(used) + SLACK:
        return cache
    return {key: cache[key] for key in used}


class _Subjects:
    """One scope at the last render: its subjects' label values (`keys`), and for each the
    text `{labels} ` that every `value=` family of the scope writes after its name, kept by
    label values."""

    def __init__(self, names: Labels) -> None:
        self._order = _sorted_labels(names)
        self._template = _labels_template(names)
        self._texts: dict[Labels, str] = {}
        self.keys: tuple[Labels, ...] = ()
        self.row: list[str] = []  # the text of each of `keys`

    def _text(self, key: Labels) -> str:
        return self._template % tuple([_escape_label(key[i]) for i in self._order])

    def update(self, keys: tuple[Labels, ...]) -> None:
        """This render's subjects: equal to the last render's, `keys` stays the tuple it was,
        so a family can tell by identity that its lines start as they did."""
        if keys == self.keys:
            return
        get, text = self._texts.get, self._text
        row = [get(key) or text(key) for key in keys]
        self._texts.update(zip(keys, row, strict=True))
        self._texts = _pruned(self._texts, keys)
        self.keys, self.row = keys, row

    def size(self) -> int:
        return len(self._texts)


class _Lines:
    """One family's writer; what it keeps between renders is bounded by what the last render
    wrote (`_pruned`)."""

    def __init__(self, family: Family[Any], openmetrics: bool) -> None:
        self.family = family
        self.head = _head(family, openmetrics).encode()
        self._name = family.name
        self._order = _sorted_labels(family.label_names)
        self._prefix = family.name + _labels_template(family.label_names)

    def prefix(self, values: Labels) -> str:
        """`name{labels} ` for a series with these label values (in `label_names` order)."""
        return self._prefix % tuple([_escape_label(values[i]) for i in self._order])

    def write(self, subjects: _Subjects, each: list[Any], numbers: Numbers) -> bytes | None:
        """The family's samples for the scope's subjects (`subjects.keys[i]` names `each[i]`),
        or None when they are the bytes this family wrote at the last render."""
        raise NotImplementedError

    def forget(self) -> None:
        """Let the next `write` answer None only for what it has itself written since."""

    def size(self) -> int:
        return 0


class _ValueLines(_Lines):
    """A `value=` family: each line is its name, the scope's label text and the number; the
    same subjects with the same numbers' texts as at the last render are the same bytes."""

    def __init__(
        self, family: Family[Any], openmetrics: bool, value: Callable[[Any], float | None]
    ) -> None:
        super().__init__(family, openmetrics)
        self._value = value
        self._keys: tuple[Labels, ...] | None = None  # the subjects of the last render
        self._texts: list[str] = []  # and the numbers' texts

    def write(self, subjects: _Subjects, each: list[Any], numbers: Numbers) -> bytes | None:
        values = list(map(self._value, each))
        shown = list(map(repr, values))
        texts = list(map(numbers.get, shown))
        if None in texts:
            texts = [
                _number(numbers, value, key) if text is None else text
                for text, value, key in zip(texts, values, shown, strict=True)
            ]
        if subjects.keys is self._keys and texts == self._texts:
            return None
        self._keys, self._texts = subjects.keys, texts  # type: ignore[assignment]
        row: list[str] = subjects.row
        if _NO_SERIES in texts:
            row = [label for label, text in zip(row, texts, strict=True) if text]
            texts = [text for text in texts if text]
        # Each line is the name, the subject's labels and the number's text (its end included),
        # laid side by side and joined once: no line is made as a string of its own (twice as
        # quick at 1,000 slots, and 1,000 fewer short-lived strings a family).
        parts = [self._name] * (3 * len(row))
        parts[1::3] = row
        parts[2::3] = texts  # type: ignore[assignment]
        return "".join(parts).encode()

    def forget(self) -> None:
        self._keys = None


class _OneOfLines(_Lines):
    """A `one_of=` family: a subject's run of lines (one per choice) depends only on its label
    values and current choice; the family is written again only when one of those changed."""

    def __init__(self, family: Family[Any], openmetrics: bool, one_of: OneOf[Any]) -> None:
        super().__init__(family, openmetrics)
        self._one_of = one_of
        self._base = len(family.scope.labels)
        self._used: list[tuple[Labels, str | None]] | None = None  # at the last render
        # Per current choice (and None, and _OTHER for any value outside the choices), the run
        # as a %-template of the scope's label values, and which of them each %s takes.
        self._templates: dict[object, tuple[str, tuple[int, ...]]] = {}

    def _template(self, current: str | None) -> tuple[str, tuple[int, ...]]:
        # Every current choice outside the choices writes the same run: all zeros.
        kept = current if current is None or current in self._one_of.choices else _OTHER
        if kept not in self._templates:
            names, parts, args = self.family.label_names, [], []
            for extra, number in self._one_of.series_of(current):
                labels = []
                for i in self._order:
                    if i < self._base:
                        labels.append(f'{names[i]}="%s"')
                        args.append(i)
                    else:
                        value = _escape_label(extra[i - self._base]).replace("%", "%%")
                        labels.append(f'{names[i]}="{value}"')
                text = number_line(number, repr(number))
                parts.append(f"{self._name}{{{','.join(labels)}}} {text}")
            self._templates[kept] = "".join(parts), tuple(args)
        return self._templates[kept]

    def _run(self, key: tuple[Labels, str | None]) -> str:
        base, current = key
        template, args = self._template(current)
        escaped = [_escape_label(value) for value in base]
        return template % tuple(map(escaped.__getitem__, args))

    def write(self, subjects: _Subjects, each: list[Any], numbers: Numbers) -> bytes | None:
        used = list(zip(subjects.keys, map(self._one_of.current, each), strict=True))
        if used == self._used:
            return None
        self._used = used
        return "".join(map(self._run, used)).encode()

    def forget(self) -> None:
        self._used = None

    def size(self) -> int:
        return len(self._templates)


class _SeriesLines(_Lines):
    """A `series=` family: any number of series per subject, each line's start kept by its
    label values."""

    def __init__(
        self, family: Family[Any], openmetrics: bool, series: Callable[[Any], Series]
    ) -> None:
        super().__init__(family, openmetrics)
        self._series = series
        self._prefixes: dict[tuple[Labels, Labels], str] = {}
        self._out: list[str] | None = None  # the texts of the last render

    def write(self, subjects: _Subjects, each: list[Any], numbers: Numbers) -> bytes | None:
        out: list[str] = []
        used: list[tuple[Labels, Labels]] = []
        prefixes = self._prefixes
        for base, subject in zip(subjects.keys, each, strict=True):
            for extra, value in self._series(subject):
                key = (base, extra)
                used.append(key)
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = self.prefix((*base, *extra))
                out.append(prefix)
                out.append(_number(numbers, value, repr(value)))
        self._prefixes = _pruned(prefixes, used)
        if out == self._out:
            return None
        self._out = out
        return "".join(out).encode()

    def forget(self) -> None:
        self._out = None

    def size(self) -> int:
        return len(self._prefixes)


def _lines(family: Family[Any], openmetrics: bool) -> _Lines:
    if family.value is not None:
        return _ValueLines(family, openmetrics, family.value)
    if family.one_of is not None:
        return _OneOfLines(family, openmetrics, family.one_of)
    if family.series is not None:
        return _SeriesLines(family, openmetrics, family.series)
    raise ValueError(f"{family.name}: no value=, series= or one_of=")


class Renderer:
    """Renders snapshots in one format, keeping what the next render will likely need again
    (see the module's docstring). Not thread-safe: `Exposition` calls it under its lock."""

    def __init__(self, *, openmetrics: bool = False) -> None:
        self._families = tuple(_lines(family, openmetrics) for family in FAMILIES)
        self._scopes = {f.scope: _Subjects(f.scope.labels) for f in FAMILIES}
        self._numbers: Numbers = dict(_NUMBERS_SEED)

    def render(self, snapshot: Snapshot) -> list[bytes | None]:
        """Each family of the table for `snapshot` (its # HELP and # TYPE lines, then its
        samples), exactly as the client library would write it; None for a family that would
        write the bytes it wrote at this renderer's last render. Joined, they are the body (for
        OpenMetrics without the closing `# EOF`: the process metrics follow).

        A caller that cannot keep what a render returned calls `forget`."""
        try:
            return self._render(snapshot)
        except BaseException:
            self.forget()  # the last render is not what they wrote last
            raise

    def forget(self) -> None:
        """Write every family at the next render: none is taken to be as it was."""
        for lines in self._families:
            lines.forget()

    def _render(self, snapshot: Snapshot) -> list[bytes | None]:
        out: list[bytes | None] = []
        each: dict[Scope[Any], list[Any]] = {}  # each scope's subjects, read once per render
        for lines in self._families:
            scope = lines.family.scope
            subjects = self._scopes[scope]
            if scope not in each:
                pairs = list(scope.subjects(snapshot))
                subjects.update(tuple([key for key, _ in pairs]))
                each[scope] = [subject for _, subject in pairs]
            written = lines.write(subjects, each[scope], self._numbers)
            out.append(None if written is None else lines.head + written)
        if len(self._numbers) > NUMBERS_KEPT:
            self._numbers = dict(_NUMBERS_SEED)
        return out

    def cached(self) -> int:
        """Entries kept between renders, all caches together."""
        kept = sum(lines.size() for lines in self._families)
        return kept + sum(s.size() for s in self._scopes.values()) + len(self._numbers)


def render(snapshot: Snapshot, *, openmetrics: bool = False) -> bytes:
    """The table's families for `snapshot`, exactly as the client library would write them
    (for OpenMetrics, without the closing `# EOF`: the process metrics follow), from nothing
    kept; `Renderer` writes the same, family by family, keeping what the next snapshot will
    need again."""
    families = Renderer(openmetrics=openmetrics).render(snapshot)
    return b"".join([family for family in families if family is not None])
