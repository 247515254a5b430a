"""GET /metrics: what the daemon does, in Prometheus' text format.

One registry per application (no global state): request and turn counters, running and
waiting turns, warm processes, time to first token, turn duration, tokens and cost by model.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core import Decision, Engine, PermissionPrompt, Turn

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _EngineGauges(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self._engine
        yield GaugeMetricFamily("claude_max_turns_running", "Turns in progress", value=engine.running)
        yield GaugeMetricFamily("claude_max_turns_waiting", "Turns waiting for a CLI slot", value=engine.waiting)
        yield GaugeMetricFamily("claude_max_warm_processes", "CLI processes kept warm", value=engine.pool.size)
        yield GaugeMetricFamily("claude_max_spare_processes", "CLI processes started ahead", value=engine.pool.spares)
        utilization = GaugeMetricFamily(
            "claude_max_subscription_utilization", "Used share of a subscription window (0..1), as last reported",
            labels=["window"],
        )  # fmt: skip
        resets = GaugeMetricFamily(
            "claude_max_subscription_resets_at_seconds",
            "When a subscription window resets (Unix time)",
            labels=["window"],
        )
        for window, _ in engine.limits.snapshot():
            if window.utilization is not None:
                utilization.add_metric([window.name], window.utilization)
            if window.resets_at is not None:
                resets.add_metric([window.name], window.resets_at)
        yield utilization
        yield resets


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "claude_max_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.turns = Counter(
            "claude_max_turns", "Turns by face, dialect (the HTTP API; the face's name otherwise) and outcome",
            ["face", "dialect", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.first_token = Histogram(
            "claude_max_time_to_first_token_seconds", "Seconds from a turn's start to its first answer text",
            ["face", "dialect"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "claude_max_turn_duration_seconds", "Seconds a turn took", ["face", "outcome"],
            buckets=_DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "claude_max_tokens", "Tokens by model and kind", ["model", "kind"], registry=self.registry
        )
        self.cost = Counter("claude_max_cost_usd", "Cost in USD by model, as the CLI reports it", ["model"],
                            registry=self.registry)  # fmt: skip
        self.permissions = Counter(
            "claude_max_permission_prompts", "Permission prompts by face and decision (allow, always, deny)",
            ["face", "decision"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_EngineGauges(engine))
        engine.approvals.on_decided(self._decided)
        engine.on_turn_end(self._turn_ended)

    async def _turn_ended(self, turn: Turn, error: BaseException | None) -> None:
        face = turn.request.face
        dialect = turn.request.dialect or face
        self.turns.labels(face, dialect, turn.outcome).inc()
        self.duration.labels(face, turn.outcome).observe(turn.elapsed)
        if turn.first_token_after is not None:
            self.first_token.labels(face, dialect).observe(turn.first_token_after)
        usage = turn.usage
        if usage is not None:
            model = turn.model_answering
            self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(model, "completion").inc(usage.output_tokens)
            self.tokens.labels(model, "cached").inc(usage.cache_read_tokens)
            self.cost.labels(model).inc(turn.cost_usd)

    def _decided(self, prompt: PermissionPrompt, decision: Decision) -> None:
        self.permissions.labels(prompt.face, decision.verdict).inc()

    def count_request(self, request: web.Request, status: int) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.requests.labels(route, str(status)).inc()

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
