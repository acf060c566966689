"""Pure decisions over plain data: slot state, invalidation forecast, what a target remembers."""
