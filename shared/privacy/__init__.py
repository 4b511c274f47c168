"""Privacy: log redaction (and, with later features, consent and suppression)."""
