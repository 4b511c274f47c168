"""Customer creation for the POS: request validation, the F&O call, idempotent replays."""
