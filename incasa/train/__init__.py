"""Scale machinery shared by every model, as plain functions: checkpoint, EMA, schedules, metrics, progress."""
