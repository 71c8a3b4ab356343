"""portless.agent."""
