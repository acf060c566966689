/* slotwatch: poll */
-- One statement for PostgreSQL 13 to 18: queries.py keeps each marked fragment (a NAME-else-ALT
-- comment, the text, an end comment) or replaces it with ALT, for the session's server version
-- and privileges (the only place that looks at either). One row of the server's figures, its
-- slot columns NULL, and one row per slot of the server (every slot: the disk does not care
-- which one holds the WAL), its server columns NULL. Plain rows, not server-built JSON: json_agg
-- over 1,000 slots cost the server more than the rest of the statement.
WITH server AS (
    SELECT pg_catalog.current_setting('server_version_num')::int AS version_num,
           pg_catalog.pg_is_in_recovery() AS in_recovery,
           CASE WHEN NOT pg_catalog.pg_is_in_recovery()
                THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint
           END AS current_lsn,
           -- current_setting(), not pg_settings: each pg_settings scan walks every GUC.
           -- SHOW prints -1 for an unlimited keep size, and pg_size_bytes('-1') is -1.
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('max_slot_wal_keep_size'))
               AS max_slot_wal_keep_size,
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))
               AS wal_segment_size,
           (extract(epoch FROM pg_catalog.current_setting('wal_sender_timeout')::interval)
               * 1000)::float8 AS wal_sender_timeout_ms,
           -- EXECUTE is checked at plan time, even in an untaken CASE branch: without the
           -- privilege the fragment becomes NULL.
           /*waldir else NULL::bigint*/(SELECT coalesce(sum(size), 0)::bigint
                                        FROM pg_catalog.pg_ls_waldir())/*end*/
               AS wal_directory_bytes,
           (SELECT system_identifier FROM pg_catalog.pg_control_system()) AS system_identifier,
           extract(epoch FROM pg_catalog.now())::float8 AS server_epoch,
           -- Once per poll, not once per slot: the databases in which a session of the
           -- consumer (PowerSync's snapshot copy) is busy.
           ARRAY(SELECT DISTINCT a.datname FROM pg_catalog.pg_stat_activity a
                 WHERE a.backend_type = 'client backend'
                   AND a.pid <> pg_catalog.pg_backend_pid()
                   AND a.state IN ('active', 'idle in transaction')
                   AND a.application_name LIKE %(consumer_like)s ESCAPE '\') AS busy_databases
), slots AS (
    SELECT s.slot_name AS name,
           s.slot_name LIKE %(slot_like)s ESCAPE '\' AS matched,
           (%(slot_database)s::text IS NULL OR s.database = %(slot_database)s::text) AS in_scope,
           s.plugin,
           s.slot_type,
           s.database,
           s.temporary,
           s.active,
           s.active_pid,
           pg_catalog.pg_wal_lsn_diff(s.restart_lsn, '0/0')::bigint AS restart_lsn,
           pg_catalog.pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0')::bigint AS confirmed_flush_lsn,
           s.wal_status,
           s.safe_wal_size,
           pg_catalog.age(s.catalog_xmin) AS catalog_xmin_age,
           /*pg17 else NULL::float8*/extract(epoch FROM pg_catalog.now() - s.inactive_since)::float8/*end*/
               AS server_inactive_seconds,
           /*pg17 else NULL::text*/s.invalidation_reason/*end*/ AS invalidation_reason,
           /*pg17 else NULL::boolean*/s.synced/*end*/ AS synced,
           /*pg17 else NULL::boolean*/s.failover/*end*/ AS failover
    FROM pg_catalog.pg_replication_slots s
)
SELECT server.version_num, server.in_recovery, server.current_lsn,
       server.max_slot_wal_keep_size, server.wal_segment_size, server.wal_sender_timeout_ms,
       server.wal_directory_bytes, server.system_identifier, server.server_epoch, x.*
-- FULL JOIN ON false: every row of each side, none paired. The server's figures travel once,
-- not on each of 1,000 slot rows for the server to print and the client to read. The slots come
-- first: a merge join keeps a copy of its second side, better one row than 1,000.
FROM (
    SELECT slots.*,
           r.pid AS sender_pid,
           r.application_name AS sender_application_name,
           r.state AS sender_state,
           pg_catalog.pg_wal_lsn_diff(r.sent_lsn, '0/0')::bigint AS sent_lsn,
           coalesce(slots.database = ANY (server.busy_databases), false) AS consumer_busy,
           /*pg14 else NULL::bigint*/st.spill_bytes/*end*/ AS spill_bytes,
           /*pg14 else NULL::bigint*/st.stream_bytes/*end*/ AS stream_bytes,
           /*pg14 else NULL::bigint*/st.total_bytes/*end*/ AS total_bytes
    FROM slots
    CROSS JOIN server
    -- The walsender and the decoding counters only for the slots slotwatch judges. The stats
    -- function is called once per slot and costs the server more than the rest of the statement
    -- together (~8 us a slot at 1,000): only a slot being decoded (active) can move its
    -- counters, so the others are read only when all_counters asks (db.py keeps their last
    -- values between). OFFSET 0 keeps the condition a one-time filter before the call.
    LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = slots.active_pid AND slots.matched
    /*pg14 else*/LEFT JOIN LATERAL (
        SELECT g.spill_bytes, g.stream_bytes, g.total_bytes
        FROM pg_catalog.pg_stat_get_replication_slot(slots.name) g
        WHERE slots.matched AND slots.in_scope AND slots.slot_type = 'logical'
          AND (slots.active OR %(all_counters)s::boolean)
        OFFSET 0
    ) st ON true/*end*/
) x
FULL JOIN server ON false
