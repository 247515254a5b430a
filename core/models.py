"""Which model names the daemon accepts, and what it passes to the CLI's `--model`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.errors import UnknownModel

PROVIDER_PREFIXES = ("maxproxy/", "claude-code-cli/", "anthropic/")

# Family names without a version mean "the CLI's latest of that family".
FAMILY_IDS = {
    "claude-opus-4": "opus",
    "claude-sonnet-4": "sonnet",
    "claude-haiku-4": "haiku",
    "claude-opus": "opus",
    "claude-sonnet": "sonnet",
    "claude-haiku": "haiku",
}

# The CLI's own aliases, passed through unchanged.
CLI_ALIASES = ("default", "opus", "sonnet", "haiku", "opusplan", "opus[1m]", "sonnet[1m]")

# Listed by /v1/models, in this order.
LISTED_MODELS = ("claude-opus-4", "claude-sonnet-4", "claude-haiku-4", "opus", "sonnet", "haiku")

# Versioned and dated ids, e.g. claude-opus-4-5-20251101, claude-sonnet-4-20250514, claude-3-5-haiku-20241022.
_VERSIONED = re.compile(
    r"^claude-(?:(?:opus|sonnet|haiku)-\d+(?:-\d+)?|\d+(?:-\d+)?-(?:opus|sonnet|haiku))(?:-\d{8})?(?:-latest)?(?:\[1m\])?$"
)


_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")


def resolve_model(requested: str | None, *, default: str = "", aliases: Mapping[str, str] | None = None) -> str:
    """The `--model` value for a requested model id; "" means the CLI's own default.

    Raises `UnknownModel` for anything that is not a Claude model or a configured alias.
    """
    if requested is None or not requested.strip():
        return default
    name = _DOTTED_VERSION.sub(r"\1-\2", requested.strip().lower())  # claude-sonnet-4.5 -> claude-sonnet-4-5
    for prefix in PROVIDER_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if aliases and name in aliases:
        return aliases[name]
    if name in FAMILY_IDS:
        return FAMILY_IDS[name]
    if name in CLI_ALIASES or _VERSIONED.match(name):
        return name
    raise UnknownModel(requested)


def listed_models(aliases: Mapping[str, str] | None = None) -> list[str]:
    return list(LISTED_MODELS) + sorted(a for a in (aliases or {}) if a not in LISTED_MODELS)


_FAMILY = re.compile(r"opus|sonnet|haiku")


def family(model: str) -> str | None:
    """opus, sonnet or haiku, when the name says."""
    found = _FAMILY.search(model.lower())
    return found.group(0) if found else None


def answer_model(requested: str, resolved: str, answered: str) -> str:
    """The `model` an answer reports.

    The id the client asked for, while the model that answered is of the family that id stands
    for: `claude-sonnet-4` means "the CLI's Sonnet", so an answer by the CLI's newest Sonnet is
    not a different model, and clients that compare the two (OpenClaw flags every such run as
    "rerouted") see none. The model that answered when it is of another family (a fallback) or
    when the client named no family. The logs, the ledger and the metrics always have the real one.
    """
    if not answered:
        return requested
    wanted = family(resolved)
    return requested if wanted is not None and wanted == family(answered) else answered
