-- `moonhive trace ID` against the mock LLM: a workflow run as a tree of its
-- journaled steps (nested by step id), under each step the model calls and
-- tool calls its attempts made (by attempt when there were several), with
-- times, tokens and cost from the records; --verbose shows the recorded
-- prompts (capped); attempts that a timeout, a retry or a killed process
-- ended are told apart.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"
local uv = require "luv"

local TRACED = [[
return workflow{
  name = "traced",
  run = function(wf, input)
    local a = wf:call("worker", "first [delay:120] [tool:calculator:{\"expression\":\"2+3\"}] [reply:five]")
    local p = wf:parallel{
      function() return wf:call("worker", "branch one [reply:b1]") end,
      function() return wf:tool("calculator", {expression = "1+1"}) end,
    }
    wf:sleep(10)
    return {a, p}
  end,
}]]

describe("moonhive trace", function()
  local P, project -- H.mock_project

  local function env() return P.env() end
  local function moonhive(args) return P.moonhive(args) end

  local function write(name, src)
    H.write(project .. "/" .. name, src)
    return name
  end

  local function trace(id, verbose)
    local args = { "trace", id, "--json" }
    if verbose then args[#args + 1] = "--verbose" end
    return cjson.decode(H.ok(moonhive(args)))
  end

  local function run_id_of(text) return text:match("run (%x+%-%x+) started") end

  -- The children of node n of a type, in order.
  local function kids(n, type_)
    local out = {}
    for _, c in ipairs(n.children or {}) do if c.type == type_ then out[#out + 1] = c end end
    return out
  end

  local function step(n, id)
    for _, c in ipairs(kids(n, "step")) do if c.step == id then return c end end
  end

  lazy_setup(function()
    P = H.mock_project('return agent{name = "worker", system = "You work carefully.", tools = {"calculator"}}')
    project = P.dir
  end)
  lazy_teardown(function()
    P.stop()
    H.cleanup()
  end)

  it("shows a workflow run's steps and, under each, the model and tool calls it made", function()
    local res = moonhive({ "run", write("traced.lua", TRACED) })
    assert.equals(0, res.code, H.show(res))
    local id = run_id_of(res.stderr)
    local t = trace(id)
    assert.same({ "run", "workflow", "traced", "succeeded" }, { t.type, t.kind, t.name, t.status })
    local steps = kids(t, "step")
    assert.same({ "1", "2", "3" }, { steps[1].step, steps[2].step, steps[3].step })
    assert.same({ "call", "parallel", "sleep" }, { steps[1].kind, steps[2].kind, steps[3].kind })

    -- step 1: a model call asking for the tool, the tool, the answer; no run of its own
    local s1 = steps[1]
    assert.equals(0, #kids(s1, "run"))
    local calls = s1.children
    assert.same({ "model", "tool", "model" }, { calls[1].type, calls[2].type, calls[3].type })
    assert.same({ "calculator", true }, { calls[2].name, calls[2].ok })
    assert.same({ "openai/x", 1, "worker" }, { calls[1].model, calls[1].tool_calls, calls[1].agent })
    -- durations from the recorded times: the mock waited 120 ms before each answer
    assert.is_true(calls[1].ms >= 120, "model call took " .. calls[1].ms)
    assert.is_true(s1.ms >= calls[1].ms + calls[3].ms, "step " .. s1.ms)
    assert.is_true(s1.started_at <= calls[1].started_at)
    assert.is_true(calls[1].finished_at <= calls[2].started_at and calls[2].finished_at <= calls[3].started_at)
    -- tokens: the step's totals are its calls', the workflow's are its steps'
    assert.equals(calls[1].tokens_in + calls[3].tokens_in, s1.tokens_in)
    assert.equals(calls[1].tokens_out + calls[3].tokens_out, s1.tokens_out)
    assert.is_true(s1.tokens_in > 0)

    -- step 2: a parallel, with its branches' steps nested under it
    local s2 = steps[2]
    local inner = kids(s2, "step")
    assert.same({ "2.1.1", "2.2.1" }, { inner[1].step, inner[2].step })
    assert.same({ "call", "tool", "calculator" }, { inner[1].kind, inner[2].kind, inner[2].name })
    local b = kids(inner[1], "model")
    assert.equals(1, #b)
    assert.equals(b[1].tokens_in, inner[1].tokens_in)
    assert.equals(s1.tokens_in + inner[1].tokens_in, t.tokens_in)
    assert.equals(s1.tokens_out + inner[1].tokens_out, t.tokens_out)

    -- the calls are events of the workflow run, tagged with their step and attempt
    local show = cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" })))
    local tagged = {}
    for _, ev in ipairs(show.events) do
      if ev.kind == "model_call" then tagged[#tagged + 1] = ("%s#%d"):format(ev.step, ev.attempt) end
    end
    assert.same({ "1#1", "1#1", "2.1.1#1" }, tagged)

    local text = H.ok(moonhive({ "trace", id:sub(1, 16) }))
    assert.matches("workflow  traced  " .. H.lit(id) .. "  succeeded", text)
    assert.matches("├─ 1  call worker  ok  %d+ ms  %d+ in / %d+ out tokens", text)
    assert.matches("│  ├─ model  openai/x  %d+ ms  %d+ in / %d+ out tokens  1 tool call", text)
    assert.matches("│  ├─ tool  calculator  ok", text)
    assert.matches("│  ├─ 2.1.1  call worker  ok", text)
    assert.matches("└─ 3  sleep  ok", text)
    assert.not_matches("You work carefully", text)
  end)

  it("--verbose shows the prompts model calls were recorded with, capped at 4 KB", function()
    local long = ("x"):rep(10000)
    H.write(project .. "/agents/wordy.lua",
            ('return agent{name = "wordy", system = "Be brief. %s"}'):format(long))
    local res = moonhive({ "run", write("wordy.lua", [[
return workflow{name = "wordy", run = function(wf) return wf:call("wordy", "say hi [reply:hi]") end}]]) })
    assert.equals(0, res.code, H.show(res))
    local id = run_id_of(res.stderr)
    local t = trace(id, true)
    local model = kids(step(t, "1"), "model")[1]
    local left = #"Be brief. " + #long - 4096
    assert.equals(4096 + #("... [%d more bytes]"):format(left), #model.system)
    assert.matches("^Be brief%. x+%.%.%. %[" .. left .. " more bytes%]$", model.system)
    assert.same({ { role = "user", content = "say hi [reply:hi]" } }, model.messages)
    assert.is_nil(trace(id).children[1].children[1].system) -- not without --verbose

    local text = H.ok(moonhive({ "trace", id, "--verbose" }))
    assert.matches("system: Be brief. xxx", text, 1, true)
    assert.matches("user: say hi [reply:hi]", text, 1, true)
    assert.matches("output: hi", text, 1, true)
  end)

  it("traces an agent run: its model calls and tool calls", function()
    local res = moonhive({ "run", "--json", "agents/worker.lua",
                           "add [tool:calculator:{\"expression\":\"40+2\"}] [reply:42]" })
    assert.equals(0, res.code, H.show(res))
    local id = cjson.decode(res.stdout).run_id
    local t = trace(id, true)
    assert.same({ "run", "agent", "worker", "succeeded" }, { t.type, t.kind, t.name, t.status })
    assert.same({ "model", "tool", "model" }, { t.children[1].type, t.children[2].type, t.children[3].type })
    assert.same({ expression = "40+2" }, t.children[2].arguments)
    assert.same({ result = 42 }, t.children[2].result)
    local last = t.children[3].messages
    assert.same({ "user", "assistant", "tool" }, { last[1].role, last[2].role, last[3].role })
    assert.equals("calculator", last[2].tool_calls[1].name)
    assert.equals(t.children[1].tokens_in + t.children[3].tokens_in, t.tokens_in)
  end)

  it("tells the attempts of a step apart: a timed-out one, one a killed process left", function()
    -- attempt 1 times out; attempt 2 answers: two attempts under the step
    local res = moonhive({ "run", write("retry.lua", [[
local n = 0
local slow = agent{name = "slow", run = function(self, input, ctx)
  n = n + 1
  ctx:emit("note", {attempt = n})
  if n == 1 then sleep(5000) end
  return "ok " .. n
end}
return workflow{name = "retry", run = function(wf)
  return wf:call(slow, "x", {timeout = 150, retry = {attempts = 2, backoff_ms = 1}})
end}]]) })
    assert.equals(0, res.code, H.show(res))
    local t = trace(run_id_of(res.stderr))
    local s1 = step(t, "1")
    assert.same({ "ok", 2 }, { s1.status, s1.attempts })
    local attempts = kids(s1, "attempt")
    assert.equals(2, #attempts)
    assert.same({ 1, 2 }, { attempts[1].attempt, attempts[2].attempt })
    assert.same({ "failed", "ok" }, { attempts[1].status, attempts[2].status })
    assert.matches("timed out after 150 ms", attempts[1].error, 1, true)
    assert.is_true(attempts[1].ms >= 150, "attempt 1 took " .. tostring(attempts[1].ms))
    assert.same({ "event", "note" }, { attempts[2].children[1].type, attempts[2].children[1].kind })
    assert.same({ attempt = 2 }, attempts[2].children[1].data)
    local text = H.ok(moonhive({ "trace", t.id }))
    assert.matches("2 attempts", text, 1, true)
    assert.matches("├─ attempt 1  failed  %d+ ms", text)

    -- a process killed inside a step: after the resume its attempt shows as interrupted
    local file = write("killed.lua", [[
local nap = agent{name = "nap", run = function(self, input, ctx)
  ctx:emit("note")
  if time.now() < input then sleep(60000) end
  return "awake"
end}
return workflow{name = "killed", run = function(wf, input) return wf:call(nap, input) end}]])
    local until_ = uv.gettimeofday() + 4 -- the agent sleeps until then: long enough to be killed inside it
    local p = H.start({ "run", file, "--input", ("%.3f"):format(until_) }, { cwd = project, env = env() })
    local id, seen
    H.wait_until(function()
      id = run_id_of(p.stderr())
      if not id then return false end
      local r = moonhive({ "trace", id, "--json" })
      local s = r.code == 0 and step(cjson.decode(r.stdout), "1")
      seen = s and kids(s, "event")[1]
      return seen ~= nil
    end, 10000)
    assert.truthy(seen, p.stderr())
    assert.equals("note", seen.kind)
    assert.equals("unfinished", step(trace(id), "1").status)
    p.kill("sigkill")
    p.wait() -- reaped: its pid is gone
    H.wait_until(function() return uv.gettimeofday() > until_ + 0.05 end, 5000)
    local r = moonhive({ "runs", "resume", id })
    assert.equals(0, r.code, H.show(r))
    local after = kids(step(trace(id), "1"), "attempt")
    assert.equals(2, #after)
    assert.same({ "interrupted", "ok" }, { after[1].status, after[2].status })
    assert.matches("interrupted", after[1].error)
    assert.is_true(after[1].started_at < after[2].started_at)
  end)

  it("says what is wrong with bad arguments", function()
    assert.matches("no run 'nope'", H.fails(moonhive({ "trace", "nope" })), 1, true)
    assert.matches("needs a run id", H.fails(moonhive({ "trace" })), 1, true)
    assert.matches("unknown option '--bogus'", H.fails(moonhive({ "trace", "x", "--bogus" })), 1, true)
    assert.matches("usage: moonhive trace", H.ok(moonhive({ "trace", "--help" })), 1, true)
  end)
end)
