"""Reading an SSE answer exactly as it went over the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class SSEAnswer:
    status: int
    headers: dict[str, str]
    data: list[str] = field(default_factory=list)  # every `data:` payload, in order

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.data if d != "[DONE]"]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "choices" in e]

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c["choices"])

    @property
    def finish_reasons(self) -> list[str]:
        return [
            c["choices"][0]["finish_reason"] for c in self.chunks if c["choices"] and c["choices"][0]["finish_reason"]
        ]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.events if "error" in e]


async def post_sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> SSEAnswer:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers or {}) as response:
        answer = SSEAnswer(response.status, dict(response.headers))
        if response.status != 200:
            answer.data.append(await response.text())
            return answer
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                answer.data.append(line[len("data: ") :])
        return answer
