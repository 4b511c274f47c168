"""State store: a small document-store protocol with SQLite and Cosmos DB backends, and typed
records (watermarks, run summaries, the ledger) built on it."""
