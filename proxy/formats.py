"""What a client asks of an answer's form, in the terms the CLI takes: a JSON Schema, an effort.

The CLI enforces a schema itself (`--json-schema`: Claude must hand its answer to a
`StructuredOutput` tool, whose input the CLI checks against the schema), so a client's
`response_format` / `text.format` becomes that schema and the answer's content is the
checked object as JSON text. A schema that is not one is refused here, before a CLI runs.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import bad_request

MAX_SCHEMA_CHARS = 100_000  # it travels on the CLI's command line, where one argument may not pass 128 KiB
ANY_OBJECT = {"type": "object"}  # `json_object`: any JSON object
# OpenAI's reasoning efforts, as the CLI's --effort (low, medium, high, xhigh, max).
EFFORTS = {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}


def output_schema(kind: Any, schema: Any, param: str) -> str:
    """The CLI's `--json-schema` for an answer format of `kind` ("text", "json_object", "json_schema"):
    empty for text. `param` names the format in errors (e.g. `response_format`)."""
    if kind in (None, "text"):
        return ""
    if kind == "json_object":
        return _canonical(ANY_OBJECT)
    if kind != "json_schema":
        raise bad_request(
            f"unknown {param}.type {kind!r}; expected one of 'text', 'json_object', 'json_schema'",
            param=f"{param}.type",
        )
    where = f"{param}.json_schema.schema" if param == "response_format" else f"{param}.schema"
    if not isinstance(schema, dict):
        raise bad_request(f"{where} must be a JSON Schema object", param=where)
    from jsonschema import SchemaError  # loaded with the first schema, not at start
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise bad_request(f"{where} is not a valid JSON Schema: {exc.message}", param=where) from None
    if schema.get("type", "object") != "object":
        # The CLI hands the answer over as a tool's input, which is always an object.
        raise bad_request(f"{where} must describe an object (its type is {schema.get('type')!r})", param=where)
    text = _canonical(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise bad_request(f"{where} is too large ({len(text):,} characters; at most {MAX_SCHEMA_CHARS:,})", param=where)
    return text


def effort(value: Any, param: str) -> str:
    """The CLI's `--effort` for an OpenAI reasoning effort; empty when none was asked for."""
    if value is None:
        return ""
    if value not in EFFORTS:
        expected = ", ".join(repr(e) for e in EFFORTS)
        raise bad_request(f"unknown {param} {value!r}; expected one of {expected}", param=param)
    return EFFORTS[value]


def _canonical(schema: dict[str, Any]) -> str:
    """One text per schema, so that equal schemas find the same warm process."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
