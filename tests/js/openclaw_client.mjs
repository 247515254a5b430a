// Drive the proxy the way OpenClaw's `openai-completions` provider does: the openai JS SDK,
// always streaming with include_usage, the whole history resent every turn, no conversation id,
// the agent's own tools offered. Prints one JSON object per turn.
//
//   node openclaw_client.mjs <baseURL> '["first message", "second message"]'
import OpenAI from "openai";

const [baseURL, turnsJson] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "not-needed", maxRetries: 0, timeout: 120_000 });
const tools = [
  {
    type: "function",
    function: {
      name: "read",
      description: "Read a file from the workspace",
      parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
    },
  },
];
const messages = [{ role: "system", content: "You are a personal assistant running inside OpenClaw." }];
const results = [];
for (const text of JSON.parse(turnsJson)) {
  messages.push({ role: "user", content: [{ type: "text", text }] });
  const started = Date.now();
  const stream = await client.chat.completions.create({
    model: "claude-sonnet-4",
    messages,
    stream: true,
    stream_options: { include_usage: true },
    max_completion_tokens: 8192,
    tools,
  });
  const turn = { content: "", reasoning: "", finishReasons: [], usage: null, gaps: [], toolCalls: 0 };
  let last = started;
  for await (const chunk of stream) {
    const now = Date.now();
    if (chunk.usage) turn.usage = chunk.usage;
    for (const choice of chunk.choices) {
      const delta = choice.delta ?? {};
      if (delta.content || delta.reasoning_content) {
        turn.gaps.push(now - last); // what OpenClaw's idle watchdog sees between visible activity
        last = now;
      }
      if (delta.content) turn.content += delta.content;
      if (delta.reasoning_content) turn.reasoning += delta.reasoning_content;
      if (delta.tool_calls) turn.toolCalls += delta.tool_calls.length;
      if (choice.finish_reason) turn.finishReasons.push(choice.finish_reason);
    }
  }
  messages.push({ role: "assistant", content: turn.content });
  results.push(turn);
}
console.log(JSON.stringify(results));
