"""Privacy: log redaction, the consent policy, the suppression list, unsubscribe tokens and erasure."""
