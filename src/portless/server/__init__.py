"""portless.server."""
