/* slotwatch: terminate the walsender holding a slot and wait for it to exit */
-- Whoever holds the slot at this instant, so a stale pid is never signalled. Without the wait,
-- the drop that follows races the dying walsender and finds the slot still active.
SELECT s.active_pid, pg_terminate_backend(s.active_pid, %(timeout_ms)s)
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s
  AND s.slot_name LIKE %(slot_like)s ESCAPE '\'
  AND s.active
