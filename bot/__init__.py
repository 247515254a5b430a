"""The Telegram face: python-telegram-bot on the same engine as the HTTP API."""

import os

# Make RetryAfter.retry_after a timedelta: building it the old way warns (an error under strict warnings).
os.environ.setdefault("PTB_TIMEDELTA", "1")
