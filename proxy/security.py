"""Who may call the API: no foreign browser pages, and a key when keys are configured.

The daemon runs an agent that can execute commands, so a web page the user happens
to visit must not be able to reach it. Browsers announce themselves with `Origin`
(and `Sec-Fetch-Site`); such requests are refused unless the origin is listed in
PROXY_ALLOWED_ORIGINS. Non-browser clients send neither and are unaffected.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from core import Settings
from proxy.errors import ApiException, ApiFailure
from proxy.keys import SCOPE, SETTINGS

_FOREIGN_FETCH_SITES = {"cross-site", "same-site"}


def _origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    if origin is None:
        return False
    return "*" in allowed or origin.rstrip("/") in allowed


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Conversation-Id, X-Api-Key",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _host_name(host: str) -> str:
    """The name in a Host header, without its port."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without keys, only requests that name this machine by a loopback name (or PROXY_HOST) are served: a web
    page whose DNS name was rebound to 127.0.0.1 sends its own name as Host, and reads nothing."""
    settings: Settings = request.app[SETTINGS]
    if settings.proxy_api_keys:
        return await handler(request)
    name = _host_name(request.headers.get("Host", "")).lower()
    if name not in _LOOPBACK_NAMES and name != settings.proxy_host.lower() and not name.startswith("127."):
        raise ApiException(
            ApiFailure(403, "permission_error", f"requests for host {name or '(none)'} are not served here; "
                       "without PROXY_API_KEYS only 127.0.0.1, localhost and ::1 are", code="host_not_allowed")
        )  # fmt: skip
    return await handler(request)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings: Settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    from_browser = origin is not None or request.headers.get("Sec-Fetch-Site") in _FOREIGN_FETCH_SITES
    if not from_browser:
        return await handler(request)
    if not _origin_allowed(origin, settings.proxy_allowed_origins):
        raise ApiException(
            ApiFailure(
                403,
                "permission_error",
                f"requests from browser origin {origin or 'unknown'} are not allowed; "
                "add it to PROXY_ALLOWED_ORIGINS to allow it",
                code="origin_not_allowed",
            )
        )
    assert origin is not None
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_cors_headers(origin))
    response = await handler(request)
    if not response.prepared:
        response.headers.update(_cors_headers(origin))
    return response


def _presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-Api-Key") or None


def key_scope(key: str) -> str:
    """A short, non-reversible name for a key: conversations of different keys never mix."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings: Settings = request.app[SETTINGS]
    request[SCOPE] = "open"
    if not settings.proxy_api_keys or not request.path.startswith(("/v1/", "/metrics")):
        return await handler(request)
    presented = _presented_key(request)
    if presented is None:
        raise ApiException(
            ApiFailure(401, "invalid_request_error", "missing API key: send Authorization: Bearer <key>",
                       code="invalid_api_key")
        )  # fmt: skip
    try:
        given = presented.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp keeps them as surrogates): no key of ours
        given = b""
    matched = False
    for key in settings.proxy_api_keys:  # compare with every key, so timing says nothing about which
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise ApiException(ApiFailure(401, "invalid_request_error", "incorrect API key", code="invalid_api_key"))
    request[SCOPE] = key_scope(presented)
    return await handler(request)


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse an announced oversized body before reading it; aiohttp's client_max_size catches the rest."""
    settings: Settings = request.app[SETTINGS]
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        raise ApiException(
            ApiFailure(413, "invalid_request_error",
                       f"request body of {length} bytes is over the limit of {settings.max_body_bytes} bytes "
                       "(PROXY_MAX_BODY_MB)", code="request_too_large")
        )  # fmt: skip
    return await handler(request)
