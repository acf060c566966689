/* slotwatch: terminate the walsender holding a slot */
-- Whoever holds the slot at this instant, so a stale pid is never signalled. No wait: the caller
-- retries the drop every few milliseconds while the walsender exits (pg_terminate_backend's own
-- wait polls every 100 ms, long enough for a restarting consumer to take the slot back).
SELECT s.active_pid, pg_terminate_backend(s.active_pid)
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s
  AND s.slot_name LIKE %(slot_like)s ESCAPE '\'
  AND (%(slot_database)s::text IS NULL OR s.database = %(slot_database)s::text)
  AND s.active
