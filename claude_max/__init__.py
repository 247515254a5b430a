"""The daemon's host: the one package that puts the engine and its faces together.

`core` is the engine, `proxy` the HTTP face, `bot` the Telegram face; none of them imports
another face. This package alone imports them all: the `claude-max` command (`cli`), the
composition of the faces on one event loop with the shutdown order (`daemon`), the service
files (`service`) and the logging configuration (`logs`).
"""
