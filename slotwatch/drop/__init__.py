"""The guarded drop: a pure guard, the evidence it judges, the admin connection, audit and text."""
