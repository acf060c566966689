/* slotwatch: drop slot (re-checks the guard in the same statement) */
-- Drops only if the slot still exists, still matches the pattern, is in the target's
-- slot_database (NULL: any database) and no walsender holds it: nothing can change between that
-- check and the drop. Zero rows means nothing was dropped.
SELECT s.slot_name, pg_drop_replication_slot(s.slot_name)
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s
  AND s.slot_name LIKE %(slot_like)s ESCAPE '\'
  AND (%(slot_database)s::text IS NULL OR s.database = %(slot_database)s::text)
  AND NOT s.active
