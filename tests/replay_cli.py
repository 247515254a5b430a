"""A stand-in for the Claude Code CLI that replays recorded stream-json (`tests/fixtures/*.jsonl`).

It speaks the CLI's persistent stream-json protocol: each user message on stdin gets the
next scripted turn on stdout, the process stays up for the next message, and an interrupt
(a `control_request`) ends the turn with the CLI's own interrupted result. The script is a
JSON file named by REPLAY_SCRIPT: {"turns": [turn, ...]}, where a turn is the name of a
fixture, or a list of stream-json objects. Two pseudo-lines direct the replay:
{"replay": "hang"} waits until interrupted (or stdin ends), {"replay": "sleep", "seconds": s}
pauses. A `control_request` line is followed by a wait for the host's `control_response`, as the
CLI waits for a permission decision. Every message read from stdin is appended to the file
REPLAY_SCRIPT + ".stdin" (one JSON per line), for the tests to see what the daemon answered; each
start's arguments to REPLAY_SCRIPT + ".argv".
Turns are taken in order by every process of one test (a counter beside the
script), so a conversation's second turn, warm or cold, gets the second turn of the script.
Every line's session id is this process's: the one it resumes, or a new one.

Only the standard library: the fast lane runs it without node, the CLI or the network.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VERSION = "2.1.331 (replay)"


def next_turn(script: Path) -> list[dict[str, Any]]:
    turns = json.loads(script.read_text())["turns"]
    counter = script.with_suffix(".next")
    with open(counter, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        index = int(handle.read() or 0)
        handle.seek(0)
        handle.truncate()
        handle.write(str(index + 1))
    if index >= len(turns):
        return [{"type": "result", "subtype": "error_during_execution", "is_error": True, "result": "",
                 "errors": [f"the replay script has only {len(turns)} turns"]}]  # fmt: skip
    turn = turns[index]
    if isinstance(turn, str):
        lines = (FIXTURES / f"{turn}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return list(turn)


def main() -> int:
    argv = sys.argv[1:]
    if "--version" in argv:
        print(VERSION)
        return 0
    session = argv[argv.index("--resume") + 1] if "--resume" in argv else str(uuid.uuid4())
    script = Path(os.environ["REPLAY_SCRIPT"])
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()

    received = script.with_suffix(".stdin")
    with open(script.with_suffix(".argv"), "a") as started:  # one line per start, for the tests to see the flags
        started.write(json.dumps(argv) + "\n")

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                with open(received, "a") as log:
                    log.write(line if line.endswith("\n") else line + "\n")
                inbox.put(json.loads(line))
        inbox.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()

    def emit(obj: dict[str, Any]) -> None:
        if "session_id" in obj or obj.get("type") in ("system", "result", "assistant", "user", "stream_event"):
            obj = {**obj, "session_id": session}
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def interrupted(request: dict[str, Any]) -> None:
        emit({"type": "control_response",
              "response": {"subtype": "success", "request_id": request.get("request_id")}})  # fmt: skip
        emit({"type": "result", "subtype": "error_during_execution", "is_error": True, "result": "",
              "usage": {}, "total_cost_usd": 0.0, "errors": ["interrupted"]})  # fmt: skip

    while (message := inbox.get()) is not None:
        if message.get("type") != "user":
            continue  # an interrupt between turns: nothing runs
        for line in next_turn(script):
            directive = line.get("replay")
            if directive == "sleep":
                time.sleep(float(line["seconds"]))
            elif directive == "hang":
                while (pending := inbox.get()) is not None and pending.get("type") != "control_request":
                    pass
                if pending is None:
                    return 0
                interrupted(pending)
                break
            elif line.get("type") == "control_request":
                emit(line)
                while (answer := inbox.get()) is not None and answer.get("type") != "control_response":
                    pass
                if answer is None:
                    return 0
            elif line.get("type") != "control_response":
                emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
