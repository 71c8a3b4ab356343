"""portless.iam."""
