"""The Telegram face. Not built yet: see the bot issue."""
