"""The engine: drives the Claude Code CLI and keeps its sessions. Imports nothing from aiohttp or telegram."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("claude-max")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0.0.0+checkout"
