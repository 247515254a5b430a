"""`claude-max openclaw-config`: a provider block for OpenClaw's `openclaw.json`."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from core import Settings

PROVIDER = "claude-max"

# What OpenClaw needs to know per model. Claude's context is 200k tokens (1M for some plans and
# models; OpenClaw then simply compacts earlier than it could). `reasoning: true` makes OpenClaw count
# the reasoning deltas the proxy streams during long tool runs as activity (PROXY_PROGRESS=reasoning).
_MODELS = [
    ("claude-opus-4", "Claude Opus (subscription)", 32_000),
    ("claude-sonnet-4", "Claude Sonnet (subscription)", 64_000),
    ("claude-haiku-4", "Claude Haiku (subscription)", 32_000),
]


def _is_loopback(host: str) -> bool:
    """A loopback address written as such (`127.0.0.1`, `::1`, `localhost`): what OpenClaw lets through
    without `allowPrivateNetwork`. A name that merely resolves to one, or to a private address, it refuses."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def provider_config(settings: Settings, host: str | None = None) -> dict[str, Any]:
    shown_host = host or ("127.0.0.1" if settings.proxy_host in ("0.0.0.0", "::") else settings.proxy_host)
    key = settings.proxy_api_keys[0].get_secret_value() if settings.proxy_api_keys else "not-needed"
    models = [
        {
            "id": model_id,
            "name": name,
            "reasoning": settings.proxy_progress == "reasoning",
            "input": ["text", "image"],
            "contextWindow": 200_000,
            "maxTokens": max_tokens,
            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
        }
        for model_id, name, max_tokens in _MODELS
    ]
    provider: dict[str, Any] = {
        "baseUrl": f"http://{shown_host}:{settings.proxy_port}/v1",
        "apiKey": key,
        "api": "openai-completions",
        "models": models,
    }
    if not _is_loopback(shown_host):
        # OpenClaw refuses a provider whose name resolves to a private or loopback address (its guard against
        # server-side request forgery) unless the provider allows it: a daemon on the LAN is one.
        provider["request"] = {"allowPrivateNetwork": True}
    return {
        "models": {"mode": "merge", "providers": {PROVIDER: provider}},
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/claude-sonnet-4"}}},
    }


def render(settings: Settings, host: str | None = None) -> str:
    return json.dumps(provider_config(settings, host), indent=2)
