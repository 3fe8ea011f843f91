// chat_completions.test.mjs — the official `openai` npm client against
// `moonhive serve`'s OpenAI-compatible endpoint (POST /v1/chat/completions):
// an agent and a workflow as models, streamed and not, usage, errors as the
// client's typed exceptions, and the run each completion records.
// Prints TAP (tests/run.sh counts it). MOONHIVE_BIN names the binary.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const bin = process.env.MOONHIVE_BIN || new URL("../../moonhive", import.meta.url).pathname;
const project = mkdtempSync(join(tmpdir(), "mh-openai-"));
mkdirSync(join(project, "agents"));
mkdirSync(join(project, "workflows"));
writeFileSync(join(project, "agents", "hello.lua"),
  'return agent{ name = "hello", description = "answers", model = "mock/x", system = "Answer." }\n');
writeFileSync(join(project, "workflows", "shout.lua"),
  'return workflow{ name = "shout", run = function(wf, input)\n' +
  '  return string.upper(wf:call("hello", input))\nend }\n');

let n = 0, failed = 0;
function ok(cond, name, detail) {
  n++;
  if (cond) console.log(`ok ${n} - ${name}`);
  else { failed++; console.log(`not ok ${n} - ${name}`); if (detail !== undefined) console.log(`# ${JSON.stringify(detail)}`); }
}

function startServer() {
  const env = { ...process.env, MOONHIVE_DATA: join(project, ".moonhive"), MOONHIVE_RATE_LIMIT: "0" };
  delete env.OPENAI_API_KEY; delete env.ANTHROPIC_API_KEY; delete env.MOONHIVE_MODEL;
  const child = spawn(bin, ["serve", "--port", "0"], { cwd: project, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  child.stderr.on("data", (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("serve did not start: " + err)), 15000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/127\.0\.0\.1:(\d+)\/ \(dashboard: \S+#key=(mh_session_[0-9a-f]+)\)/);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]), key: m[2], stderr: () => err }); }
    });
    child.on("exit", (code) => reject(new Error(`serve exited (${code}): ${err}`)));
  });
}

const srv = await startServer();
const base = `http://127.0.0.1:${srv.port}/v1`;
const client = new OpenAI({ apiKey: srv.key, baseURL: base, maxRetries: 0 });

try {
  // not streamed
  const c = await client.chat.completions.create({
    model: "agent:hello", messages: [{ role: "user", content: "[reply:forty two is the answer]" }] });
  ok(c.choices[0].message.content === "forty two is the answer", "an agent answers through chat.completions.create", c);
  ok(c.choices[0].finish_reason === "stop" && c.object === "chat.completion", "finish_reason stop, object chat.completion");
  ok(c.usage && c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens && c.usage.completion_tokens > 0,
     "usage counts the model's tokens", c.usage);
  ok(/^chatcmpl-/.test(c.id), "the completion id names the run", c.id);

  // the completion is a recorded run
  const runId = c.id.replace(/^chatcmpl-/, "");
  const run = await (await fetch(`${base}/runs/${runId}`, { headers: { Authorization: `Bearer ${srv.key}` } })).json();
  ok(run.status === "succeeded" && run.output === "forty two is the answer" && run.agent === "hello",
     "the completion was recorded as a run of the agent", run);

  // streamed, with usage
  const stream = await client.chat.completions.create({
    model: "agent:hello", stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "[reply:streamed words arrive here]" }] });
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta && choice.delta.content) text += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  ok(text === "streamed words arrive here", "a streamed answer assembles to the agent's reply", text);
  ok(finish === "stop" && chunks >= 3, "the stream ends with finish_reason stop", { finish, chunks });
  ok(usage && usage.completion_tokens > 0, "stream_options.include_usage sends the usage", usage);

  // a conversation and a workflow as the model
  const w = await client.chat.completions.create({
    model: "workflow:shout",
    messages: [{ role: "system", content: "be loud" }, { role: "user", content: "hello" },
               { role: "assistant", content: "hi" }, { role: "user", content: "[reply:quiet please]" }] });
  ok(w.choices[0].message.content === "QUIET PLEASE", "a workflow answers as a model", w.choices[0]);

  // errors as the client's typed exceptions
  try {
    await client.chat.completions.create({ model: "agent:nobody", messages: [{ role: "user", content: "x" }] });
    ok(false, "an unknown agent is refused");
  } catch (e) {
    ok(e instanceof OpenAI.NotFoundError && /no agent named 'nobody'/.test(e.message), "an unknown agent is a NotFoundError", e.message);
  }
  try {
    await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] });
    ok(false, "a model that is no agent or workflow is refused");
  } catch (e) {
    ok(e instanceof OpenAI.BadRequestError && /agent:NAME/.test(e.message), "model gpt-4o is a BadRequestError", e.message);
  }
  try {
    const bad = new OpenAI({ apiKey: "mh_session_00000000000000000000000000000000", baseURL: base, maxRetries: 0 });
    await bad.chat.completions.create({ model: "agent:hello", messages: [{ role: "user", content: "x" }] });
    ok(false, "a wrong key is refused");
  } catch (e) {
    ok(e instanceof OpenAI.AuthenticationError, "a wrong key is an AuthenticationError", e.message);
  }
} catch (e) {
  ok(false, "the client run raised", String(e && e.stack || e));
} finally {
  srv.child.kill("SIGTERM");
  const code = await new Promise((resolve) => srv.child.on("exit", resolve));
  ok(code === 0, "serve exits 0 on SIGTERM", code);
  ok(!srv.stderr().includes(srv.key.slice(11)), "no log line carries the session key");
  rmSync(project, { recursive: true, force: true });
  console.log(`1..${n}`);
  process.exit(failed ? 1 : 0);
}
