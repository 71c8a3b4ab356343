"""portless.bus."""
