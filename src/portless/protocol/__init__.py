"""portless.protocol."""
