"""Create-customer feature: validation, idempotency and the F&O call behind POST /api/customers."""
