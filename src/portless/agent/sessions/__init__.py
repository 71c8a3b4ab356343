"""Session plugins: shell, commands and port sessions."""
