/* slotwatch: may this role list pg_wal? (pg_monitor, or a direct GRANT EXECUTE) */
SELECT has_function_privilege('pg_catalog.pg_ls_waldir()', 'EXECUTE')
