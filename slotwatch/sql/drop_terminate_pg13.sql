/* slotwatch: terminate the walsender holding a slot (PostgreSQL 13: no wait) */
-- Whoever holds the slot at this instant, so a stale pid is never signalled.
SELECT s.active_pid, pg_terminate_backend(s.active_pid)
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s
  AND s.slot_name LIKE %(slot_like)s ESCAPE '\'
  AND s.active
