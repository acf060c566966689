/* slotwatch: poll (PostgreSQL 17 and 18) */
SELECT json_build_object(
    'version_num', current_setting('server_version_num')::int,
    'in_recovery', pg_is_in_recovery(),
    'current_lsn', CASE WHEN NOT pg_is_in_recovery()
                        THEN pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END,
    -- current_setting(), not pg_settings: each pg_settings scan walks every GUC (~0.3 ms).
    -- SHOW prints -1 for an unlimited keep size, and pg_size_bytes('-1') is -1.
    'max_slot_wal_keep_size', pg_size_bytes(current_setting('max_slot_wal_keep_size')),
    'wal_segment_size', pg_size_bytes(current_setting('wal_segment_size')),
    'wal_sender_timeout_ms',
        extract(epoch FROM current_setting('wal_sender_timeout')::interval) * 1000,
    -- Privileges are checked at plan time, even in an untaken CASE branch: queries.py swaps
    -- this expression for NULL when the role may not execute pg_ls_waldir().
    'wal_directory_bytes', /*waldir*/(SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())/*waldir*/,
    'server_epoch', extract(epoch FROM now()),
    'slots', coalesce((
        SELECT json_agg(row_to_json(x) ORDER BY x.name) FROM (
            SELECT s.slot_name AS name,
                   s.plugin,
                   s.slot_type,
                   s.database,
                   s.temporary,
                   s.active,
                   s.active_pid,
                   pg_wal_lsn_diff(s.restart_lsn, '0/0') AS restart_lsn,
                   pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0') AS confirmed_flush_lsn,
                   s.wal_status,
                   s.safe_wal_size,
                   age(s.catalog_xmin) AS catalog_xmin_age,
                   extract(epoch FROM now() - s.inactive_since) AS server_inactive_seconds,
                   s.invalidation_reason,
                   s.conflicting,
                   s.synced,
                   s.failover,
                   r.pid AS sender_pid,
                   r.application_name AS sender_application_name,
                   r.state AS sender_state,
                   pg_wal_lsn_diff(r.sent_lsn, '0/0') AS sent_lsn,
                   EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.datname = s.database
                             AND a.backend_type = 'client backend'
                             AND a.pid <> pg_backend_pid()
                             AND a.state IN ('active', 'idle in transaction')
                             AND a.application_name LIKE %(consumer_like)s ESCAPE '\'
                   ) AS consumer_busy,
                   st.spill_bytes,
                   st.stream_bytes,
                   st.total_bytes
            FROM pg_replication_slots s
            LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
            LEFT JOIN pg_stat_replication_slots st ON st.slot_name = s.slot_name
            WHERE s.slot_name LIKE %(slot_like)s ESCAPE '\'
        ) x), '[]'::json)
) AS poll
