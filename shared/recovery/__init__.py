"""Recovery analytics: the holdout group, conversion tracking and the recovery report."""
