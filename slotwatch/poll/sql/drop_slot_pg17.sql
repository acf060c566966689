/* slotwatch: drop slot (re-checks the guard in the same statement, PostgreSQL 17+) */
-- As drop_slot_pg13.sql, and never a slot PostgreSQL keeps for failover (synced or failover).
SELECT s.slot_name, pg_drop_replication_slot(s.slot_name)
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s
  AND s.slot_name LIKE %(slot_like)s ESCAPE '\'
  AND (%(slot_database)s::text IS NULL OR s.database = %(slot_database)s::text)
  AND NOT s.active
  AND NOT s.synced
  AND NOT s.failover
