/* slotwatch: drop lock */
-- Session-level, keyed on the slot name: a second `slotwatch drop` of the same slot waits its
-- turn and then finds the slot gone. Released by drop_unlock.sql or when the session ends.
SELECT pg_try_advisory_lock(hashtext('slotwatch drop'), hashtext(%(slot)s))
