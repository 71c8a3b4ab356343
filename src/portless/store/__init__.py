"""portless.store."""
