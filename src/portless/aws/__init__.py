"""portless.aws."""
