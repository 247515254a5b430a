"""The OpenAI-compatible HTTP face, and the `claude-max` command that hosts the daemon."""
