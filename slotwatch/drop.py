"""The guarded drop of a wedged slot (SPEC §5 `drop`): placeholder until the guard lands."""

from __future__ import annotations

import argparse

from slotwatch.errors import UsageError
from slotwatch.settings import Settings, Target


def run_drop(args: argparse.Namespace, settings: Settings, target: Target) -> int:
    raise UsageError("drop is not available in this build yet")
