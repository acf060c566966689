/* slotwatch: drop unlock */
SELECT pg_advisory_unlock(hashtext('slotwatch drop'), hashtext(%(slot)s))
