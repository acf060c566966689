"""Writes docs/reference.md from the code: metrics, states, endpoints, verbs, exit codes, drop
audit outcomes, settings.

    python -m slotwatch.reference          # rewrite docs/reference.md
    python -m slotwatch.reference --check  # exit 1 if the committed page differs

Names, types, labels, defaults and options come from the code that uses them (the metric table,
the argument parser, the settings models, the exception tree); the sentences that explain states
and settings come from the contract (docs/contract.md), so neither is written twice. Only useful
in a checkout: the contract and the page live in docs/, outside the wheel.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from slotwatch import errors
from slotwatch.cli import build_parser
from slotwatch.config.names import PREFIX
from slotwatch.config.settings import Settings
from slotwatch.config.targets import IDENTITY_KEYS, TARGET_KEYS, TargetEntry
from slotwatch.drop.audit import OUTCOMES
from slotwatch.model import SlotState
from slotwatch.serve.http import ENDPOINTS
from slotwatch.serve.metrics import COUNTER, FAMILIES, PROCESS_COUNTERS

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONTRACT = DOCS / "contract.md"
PAGE = DOCS / "reference.md"

# Settings whose value is a duration or a size, shown as an operator writes them.
_SECONDS = (("h", 3600), ("m", 60), ("s", 1))
_BYTES = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


# --- the contract, read as data ------------------------------------------------------------


def contract_section(number: int, text: str | None = None) -> str:
    """The body of `## <number>. …` in docs/contract.md."""
    text = CONTRACT.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"^## {number}\. .*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        raise LookupError(f"docs/contract.md has no section {number}")
    return match.group(1)


def markdown_table(section: str) -> list[list[str]]:
    """The rows of the first table in `section`, header and rule left out, cells stripped."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def contract_metric_names(text: str | None = None) -> set[str]:
    """Every metric family named in §3 (backticked, labels in braces dropped)."""
    return set(re.findall(r"`(slotwatch_[a-z0-9_]+)(?:\{[^}`]*\})?`", contract_section(3, text)))


def contract_metric_labels(text: str | None = None) -> dict[str, set[str]]:
    """The extra labels §3 writes in braces after a family's name."""
    found = re.findall(r"`(slotwatch_[a-z0-9_]+)\{([^}`]*)\}`", contract_section(3, text))
    return {name: {label.strip() for label in labels.split(",")} for name, labels in found}


def _unquote(cell: str) -> str:
    return cell.strip().strip("`")


def _contract_refs(text: str) -> str:
    # A section number in the contract's own table means the contract's section here too.
    return re.sub(r"§(\d)", r"contract §\1", text)


def contract_states() -> dict[str, str]:
    return {_unquote(row[0]): row[1] for row in markdown_table(contract_section(2))}


def contract_settings() -> dict[str, str]:
    """Variable name -> meaning, from §6's table (a row may name two variables)."""
    meanings: dict[str, str] = {}
    for row in markdown_table(contract_section(6)):
        for variable in re.findall(r"`(SLOTWATCH_[A-Z_]+)`", row[0]):
            meanings[variable] = _contract_refs(row[2])
        if "…_FILE" in row[0]:  # `SLOTWATCH_ADMIN_DSN` (…), `…_FILE` (…)
            first = re.findall(r"`(SLOTWATCH_[A-Z_]+)`", row[0])[0]
            meanings[f"{first}_FILE"] = _contract_refs(row[2])
    return meanings


def contract_alerts() -> dict[str, str]:
    """Alert name -> severity, from §7's table."""
    return {_unquote(row[0]): _unquote(row[1]) for row in markdown_table(contract_section(7))}


# --- the page ----------------------------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _shown(key: str, value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"`{value}`"
    if not key.endswith("_bytes") and not isinstance(value, float):
        return f"`{value}`"  # a count; durations are floats (seconds), sizes end in _bytes
    units = _BYTES if key.endswith("_bytes") else _SECONDS
    for suffix, size in units:
        if value >= size and value % size == 0:
            return f"`{int(value // size)}{suffix}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _metrics() -> list[str]:
    lines = [
        "## Metrics",
        "",
        "Every family on `GET /metrics`, in the order it is exposed"
        " (docs/contract.md §3). Counters end in `_total`.",
        "",
    ]
    rows = [
        (f"`{f.name}`", f.type, ", ".join(f"`{n}`" for n in f.label_names) or "—", f.help)
        for f in FAMILIES
    ]
    rows += [(f"`{name}`", COUNTER, "—", text) for name, text in PROCESS_COUNTERS]
    lines += _table(["name", "type", "labels", "help"], rows)
    lines += ["", "Also the client library's `process_*` and `python_info` metrics.", ""]
    return lines


def _states() -> list[str]:
    meanings = contract_states()
    lines = [
        "## Slot states",
        "",
        "In order of precedence: the first that applies wins (docs/contract.md §2).",
        "",
    ]
    lines += _table(["state", "meaning"], ((f"`{s.value}`", meanings[s.value]) for s in SlotState))
    return [*lines, ""]


def _endpoints() -> list[str]:
    lines = [
        "## HTTP endpoints",
        "",
        "GET and HEAD only; nothing changes anything (docs/contract.md §4).",
        "",
    ]
    lines += _table(["path", "answers"], ((f"`{p}`", what) for p, what in ENDPOINTS))
    return [*lines, ""]


def _verbs() -> list[str]:
    parser = build_parser()
    lines = ["## Verbs", "", "`slotwatch [--config FILE] VERB` (docs/contract.md §5).", ""]
    rows = []
    for action in parser._actions:  # argparse keeps its sub-commands here, nowhere public
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for verb, sub in action.choices.items():
                options = [
                    "/".join(a.option_strings) + (f" {a.metavar}" if a.metavar else "")
                    if a.option_strings
                    else str(a.metavar)
                    for a in sub._actions
                    if a.dest != "help"
                ]
                rows.append(
                    (f"`{verb}`", helps.get(verb, ""), ", ".join(f"`{o}`" for o in options) or "—")
                )
    lines += _table(["verb", "does", "arguments"], rows)
    return [*lines, ""]


def _exit_codes() -> list[str]:
    tree = errors.__doc__ or ""
    rows: list[tuple[str, str, str]] = []
    for name, code, meaning in re.findall(r"(\w+)\s+(\d+)\s+(.+)", tree):
        if hasattr(errors, name):
            if getattr(errors, name).exit_code != int(code):
                raise RuntimeError(f"errors.py: the tree says {name} exits {code}; it does not")
            rows.append((code, f"`{name}`", meaning.strip()))
    rows.insert(0, ("0", "—", "success"))
    rows.append(("130", "—", "interrupted (Ctrl-C, SIGINT) before a one-shot verb finished"))
    rows.sort(key=lambda row: int(row[0]))
    lines = [
        "## Exit codes",
        "",
        "Outside `check` (docs/contract.md §5); `check` exits 0 OK,"
        " 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        "",
    ]
    lines += _table(["code", "error", "means"], rows)
    return [*lines, ""]


def _audit_outcomes() -> list[str]:
    lines = [
        "## Drop audit outcomes",
        "",
        "The `outcome` of the record every confirmed `drop` leaves in the log and in"
        " `SLOTWATCH_AUDIT_LOG` (docs/contract.md §5).",
        "",
    ]
    lines += _table(["outcome", "means"], ((f"`{k}`", v) for k, v in OUTCOMES.items()))
    return [*lines, ""]


def setting_rows() -> list[tuple[str, str, str, str]]:
    """(variable, TOML key, where it may be set, default) for every setting the code reads."""
    rows: list[tuple[str, str, str, str]] = []
    per_target = set(TARGET_KEYS)
    for key in TARGET_KEYS:
        variable = f"{PREFIX}{'TARGET_NAME' if key == 'name' else key.upper()}"
        field = TargetEntry.model_fields[key]
        default = "required" if key == "dsn" else _shown(key, field.default)
        where = "per target" if key in IDENTITY_KEYS else "top level or per target"
        rows.append((variable, key, where, default))
    for key, field in Settings.model_fields.items():
        if key in per_target or key in ("target_name", "targets"):
            continue
        rows.append((f"{PREFIX}{key.upper()}", key, "top level", _shown(key, field.default)))
    rows.append((f"{PREFIX}CONFIG", "—", "environment only", "unset"))
    return rows


def _settings() -> list[str]:
    meanings = contract_settings()
    lines = [
        "## Settings",
        "",
        "Environment variables, or the same keys in lower case in the TOML file; a variable"
        " overrides the file (docs/contract.md §6). Durations accept `30s`/`5m`/`1h`, sizes"
        " `16MiB`/`4GiB`.",
        "",
    ]
    rows = [
        (
            f"`{variable}`",
            f"`{key}`" if key != "—" else key,
            where,
            default,
            meanings.get(variable, ""),
        )
        for variable, key, where, default in setting_rows()
    ]
    lines += _table(["variable", "TOML key", "where", "default", "meaning"], rows)
    return [*lines, ""]


def page() -> str:
    lines = [
        "# slotwatch reference",
        "",
        "<!-- Generated by `python -m slotwatch.reference` from the code; do not edit by hand."
        " tests/unit/test_contract.py fails when this page and the code differ. -->",
        "",
        "What this version of slotwatch exports, answers and accepts. The promises behind it are"
        " in [contract.md](contract.md).",
        "",
        *_metrics(),
        *_states(),
        *_endpoints(),
        *_verbs(),
        *_exit_codes(),
        *_audit_outcomes(),
        *_settings(),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m slotwatch.reference")
    args.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md differs")
    check = args.parse_args(argv).check
    text = page()
    if check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python -m slotwatch.reference", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
