"""Settings, read once from the environment or `.env`, and the default timeouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import SettingsError, UnknownModel
from core.limits import FallbackRule
from core.models import FAMILY_IDS, resolve_model
from core.projects import Projects

# Waits that have no setting of their own.
CLI_VERSION_TIMEOUT = 15.0  # `claude --version` in doctor
RETRY_AFTER_SECONDS = 5  # what a saturated daemon tells clients

PermissionMode = Literal["bypassPermissions", "acceptEdits", "auto", "default", "dontAsk", "plan", "manual"]
# A face's mode: one of the CLI's, or `ask` (the CLI's default mode, its prompts answered by a person).
FaceMode = Literal["ask", "bypassPermissions", "acceptEdits", "auto", "default", "dontAsk", "plan", "manual"]
ASK = "ask"


def _share(text: str) -> float:
    """0.9 or 90%, as a share of a window (0..1)."""
    text = text.strip()
    value = float(text.removesuffix("%")) / 100 if text.endswith("%") else float(text)
    if not 0 < value <= 1:
        raise ValueError(f"{text!r} is not a share between 0 and 1 (or 0% and 100%)")
    return value


def _pairs(value: str, shape: str) -> list[tuple[str, str]]:
    """`a=b, c=d` as [(a, b), (c, d)]; anything else is an error that shows the expected shape."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"expected {shape}, separated by commas; {item!r} is not one")
        pairs.append((name.strip(), target.strip()))
    return pairs


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the daemon. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    claude_bin: str = "claude"
    claude_workdir: Path | None = None
    state_dir: Path = Path("~/.local/state/claude-max")
    claude_permission_mode: PermissionMode = "bypassPermissions"
    telegram_permission_mode: FaceMode = "ask"
    proxy_permission_mode: FaceMode = "bypassPermissions"
    approval_timeout: float = Field(default=600.0, gt=0)
    claude_max_turns: int | None = Field(default=None, ge=1)
    default_model: str = ""
    fallback_model: str = ""  # the CLI's --fallback-model: when the main model is overloaded
    limit_warn_at: Annotated[tuple[float, ...], NoDecode] = (0.8, 0.95)
    limit_fallback: Annotated[tuple[FallbackRule, ...], NoDecode] = ()
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    proxy_host: str = "127.0.0.1"
    proxy_port: int = Field(default=3456, ge=0, le=65535)
    proxy_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    proxy_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    proxy_max_body_mb: float = Field(default=10.0, gt=0)
    proxy_progress: Literal["off", "reasoning", "text"] = "reasoning"
    proxy_progress_every: float = Field(default=15.0, gt=0)

    telegram_bot_token: SecretStr | None = None
    telegram_allowed_users: Annotated[list[int], NoDecode] = Field(default_factory=list)
    telegram_notify_id: int | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_edit_interval: float = Field(default=2.5, ge=0.5)
    telegram_max_file_mb: float = Field(default=20.0, gt=0)
    transcribe_url: str = ""  # an OpenAI-compatible transcription server, for voice messages (bot.voice)
    transcribe_model: str = "whisper-1"
    transcribe_api_key: SecretStr | None = None
    projects: str = ""  # name=path pairs, or one root whose subdirectories are the projects (core.projects)

    activity_timeout: float = Field(default=600.0, gt=0)
    max_concurrent: int = Field(default=4, ge=1, le=256)
    queue_wait: float = Field(default=10.0, ge=0)
    kill_grace: float = Field(default=3.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    tool_result_timeout: float = Field(default=300.0, gt=0)
    tool_parked_max: int = Field(default=4, ge=1, le=256)
    warm_max: int = Field(default=4, ge=0, le=256)
    warm_idle: float = Field(default=300.0, gt=0)
    warm_spares: int = Field(default=0, ge=0, le=16)
    debug: str = ""

    # Variables of the .env file, for the CLI's environment too (CLAUDE_CODE_OAUTH_TOKEN, IS_SANDBOX, ...).
    _env_file_values: dict[str, str] = PrivateAttr(default_factory=dict)
    _env_file_path: Path | None = PrivateAttr(default=None)

    @field_validator("proxy_api_keys", "proxy_allowed_origins", "telegram_allowed_users", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("proxy_api_keys")
    @classmethod
    def _long_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        short = [k for k in keys if len(k.get_secret_value()) < MIN_KEY_LENGTH]
        if short:
            raise ValueError(
                f"{len(short)} of the keys are shorter than {MIN_KEY_LENGTH} characters: a key that short can be "
                "guessed (try `openssl rand -hex 24`)"
            )
        return keys

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _aliases(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return {name.lower(): model for name, model in _pairs(value, "name=model pairs, like gpt-4o=sonnet")}

    @field_validator("limit_warn_at", mode="before")
    @classmethod
    def _warn_at(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            shares = tuple(sorted({_share(item) for item in value.split(",") if item.strip()}))
        except ValueError as exc:
            raise ValueError(f"expected shares separated by commas, like 0.8,0.95 or 80%,95%: {exc}") from None
        if shares and shares[-1] >= 1:
            raise ValueError("a warning comes before the limit: every share must be below 1 (100% is told anyway)")
        return shares

    @field_validator("limit_fallback", mode="before")
    @classmethod
    def _fallback(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rules = []
        for source, rest in _pairs(value, "family=model@share rules, like opus=sonnet@0.9"):
            target, _, share = rest.partition("@")
            family = FAMILY_IDS.get(source.lower(), source.lower())
            try:
                if family not in ("opus", "sonnet", "haiku"):
                    raise ValueError(f"{source!r} is not a model family (opus, sonnet, haiku)")
                if not share.strip():
                    raise ValueError("the share it applies from is missing (@0.9)")
                rules.append(FallbackRule(family, resolve_model(target), _share(share)))
            except (ValueError, UnknownModel) as exc:
                raise ValueError(f"in {source}={rest}: {exc} (rules look like opus=sonnet@0.9)") from None
        return tuple(rules)

    @field_validator("projects")
    @classmethod
    def _projects(cls, value: str) -> str:
        Projects.parse(value)  # (a ValueError names what is wrong)
        return value

    @property
    def project_dirs(self) -> Projects:
        return Projects.parse(self.projects)

    @field_validator("fallback_model")
    @classmethod
    def _fallback_model(cls, value: str) -> str:
        for name in (part.strip() for part in value.split(",") if part.strip()):
            try:
                resolve_model(name)
            except UnknownModel:
                raise ValueError(f"{name!r} is not a Claude model (opus, sonnet, haiku, or a model id)") from None
        return value.strip()

    @field_validator("transcribe_url")
    @classmethod
    def _transcribe_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"a transcription server looks like http://127.0.0.1:8000/v1, got {value!r}")
        return value

    @field_validator(
        "telegram_bot_token",
        "telegram_notify_id",
        "claude_max_turns",
        "claude_workdir",
        "transcribe_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("proxy_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"an origin looks like https://example.com, got {origin!r}")
        return [origin.rstrip("/") for origin in value]

    @model_validator(mode="after")
    def _face_modes(self) -> Settings:
        """A user who set CLAUDE_PERMISSION_MODE keeps what they chose, for every face they did not set."""
        if "claude_permission_mode" in self.model_fields_set:
            for name in ("telegram_permission_mode", "proxy_permission_mode"):
                if name not in self.model_fields_set:
                    setattr(self, name, self.claude_permission_mode)
        return self

    @model_validator(mode="after")
    def _paths(self) -> Settings:
        self.state_dir = self.state_dir.expanduser()
        if self.claude_workdir is None:
            self.claude_workdir = self.state_dir / "workspace"
        self.claude_workdir = self.claude_workdir.expanduser()
        return self

    @property
    def workdir(self) -> Path:
        assert self.claude_workdir is not None  # set by _paths
        return self.claude_workdir

    @property
    def debug_enabled(self) -> bool:
        return self.debug.strip().lower() not in ("", "0", "false", "no", "off")

    def child_environment(self) -> dict[str, str]:
        """The CLI's environment: the daemon's, plus `.env` entries it does not have, minus CLAUDECODE and
        the daemon's own secrets (`PROXY_API_KEYS`, `TELEGRAM_BOT_TOKEN`).

        The daemon's own environment wins, as it does for the settings themselves.
        """
        env = {**self._env_file_values, **os.environ}
        env.pop("CLAUDECODE", None)
        # The daemon's own secrets are not the agent's: a client that has it run `env` must not read
        # another client's key or the bot's token. (The CLI's own credentials pass.)
        return {name: value for name, value in env.items() if name.upper() not in _SECRET_SETTINGS}

    @property
    def env_file_secrets(self) -> tuple[Path, list[str]] | None:
        """The `.env` file read, and the secrets it holds (by name), if it holds any."""
        if self._env_file_path is None:
            return None
        held = sorted(n for n in self._env_file_values if n.upper() in _SECRET_SETTINGS | _CLI_CREDENTIALS)
        return (self._env_file_path, held) if held else None

    @property
    def max_body_bytes(self) -> int:
        return int(self.proxy_max_body_mb * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        return self.proxy_host in {"127.0.0.1", "::1", "localhost"} or self.proxy_host.startswith("127.")


_SECRET_SETTINGS = frozenset(
    name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)  # PROXY_API_KEYS, TELEGRAM_BOT_TOKEN: never shown, never handed to the agent


MIN_KEY_LENGTH = 16  # of an API key: shorter ones are refused at start
_CLI_CREDENTIALS = frozenset({"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"})


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line per bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            message = error["msg"].removeprefix("Value error, ")
            shown = "***" if name in _SECRET_SETTINGS else repr(error.get("input"))
            lines.append(f"{name}: {message}" + ("" if shown in message else f" (got {shown})"))
        raise SettingsError("invalid setting: " + "; ".join(lines)) from None
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    if isinstance(env_file, (str, Path)) and Path(env_file).is_file():
        values = dotenv_values(env_file)
        settings._env_file_values = {k: v for k, v in values.items() if v is not None and v != ""}
        settings._env_file_path = Path(env_file)
    return settings
