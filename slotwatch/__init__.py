"""slotwatch: keep a PostgreSQL logical replication slot from silently eating the disk.

The map. Data flows one way; each folder is one part of the design:

    config/  settings model, its sources (env, TOML, *_FILE secrets), targets -> Settings
    poll/    the database connection, the SQL, the liveness probe -> PollResult, ProbeResult
    judge/   pure decisions: classify a slot, forecast invalidation, a target's memory
    serve/   the snapshot store, the metrics collector, the HTTP endpoints
    drop/    the guarded drop: guard (pure), evidence, admin connection, audit, text

At the top: `model` (plain data every part shares), `errors`, `logs`, `units`, `patterns`
(slot-pattern matching), `report` (the documents `status`, `/status` and `drop` show),
`reference` (writes docs/reference.md from the code), `wiring` (target views, connections, one
judged poll: shared by the daemon and the one-shot verbs),
`service` (the daemon: scheduler, signals, shutdown), `allocator` (the daemon's C heap, asked of
glibc once) and `cli` (the verbs; the only place that
exits).

The rules, checked by tests/unit/test_layout.py: `judge/` and `model` do no I/O and import
nothing from `poll/`, `serve/`, `drop/`, `config/`; `serve/` never imports `poll/`'s connection
code (a scrape never touches the database) and no endpoint changes anything; `config/` imports
nothing from the other parts; `drop/` may read with `poll/` and judge with `judge/`, and it is the
only part that changes the database.
"""

__version__ = "0.1.0"
