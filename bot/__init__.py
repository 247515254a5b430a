"""The Telegram face: python-telegram-bot on the same engine as the HTTP API."""
