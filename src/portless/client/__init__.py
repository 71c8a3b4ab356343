"""portless.client."""
