/* slotwatch: drop privileges */
-- Asked before anything changes, so a role that cannot finish the job never starts it.
SELECT current_user::text AS role,
       r.rolsuper AS superuser,
       r.rolreplication AS replication,
       pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') AS signal_backend
FROM pg_roles r
WHERE r.rolname = current_user
