"""Reading the world: the database connection and its SQL, and the liveness probe. No decisions."""
