"""Finance & Operations: the JSON custom-service client, its models and its error mapping."""
