-- Workflow graphs end to end: steps = {...} compiled onto the durable
-- engine. Dependency order and parallel rounds, `when` conditions, loops
-- that stop on their condition or at max, per-step retry and timeout with
-- an on_error step, compensations in reverse step order (graph and code),
-- a compensation surviving SIGKILL, a graph from a JSON file (its text is
-- the version), definition-time errors, and SIGKILL at random points of a
-- JSON graph run with `runs resume` re-running nothing journaled.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

-- A graph with a parallel round, a loop (draft/review three times), a
-- skipped step and delays so a kill lands anywhere; every prompt is
-- "step KEY of TAG" and every reply names its KEY.
local CRASH_JSON = [[
{
  "name": "crashgraph",
  "steps": {
    "plan":   {"agent": "worker", "input": "step plan of {{input.tag}} [delay:40] [reply:P]"},
    "left":   {"agent": "worker", "after": "plan", "input": "step left of {{input.tag}} [delay:60] [reply:L]"},
    "right":  {"agent": "worker", "after": ["plan"], "input": "step right of {{input.tag}} [delay:30] [reply:R]"},
    "draft":  {"agent": "worker", "after": ["left", "right"],
               "input": "step draft{{steps.draft.runs}} of {{input.tag}} [delay:40] [reply:D{{steps.draft.runs}}]"},
    "review": {"agent": "worker", "after": "draft",
               "input": "step review{{steps.review.runs}} of {{input.tag}} [delay:30] [reply:{{steps.draft.runs >= 3 and 'OK' or 'again'}}{{steps.review.runs}}]",
               "loop": {"back_to": "draft", "max": 5, "when": "not (steps.review.output contains 'OK')"}},
    "extra":  {"agent": "worker", "after": "review", "when": "input.extra", "input": "step extra of {{input.tag}}"},
    "final":  {"agent": "worker", "after": ["review", "extra"],
               "input": "step final of {{input.tag}} [delay:30] [reply:{{steps.plan.output}}{{steps.left.output}}{{steps.right.output}}{{steps.draft.output}}{{steps.review.output}}]"}
  },
  "output": "{{steps.final.output}} {{steps.extra.status}} {{steps.review.runs}}"
}]]
local CRASH_OUT = "PLRD2OK2 skipped 3"
local CRASH_KEYS = { "plan", "left", "right", "draft0", "draft1", "draft2", "review0", "review1", "review2", "final" }
local REPLY_KEY = { P = "plan", L = "left", R = "right", D0 = "draft0", D1 = "draft1", D2 = "draft2", again0 = "review0",
                    again1 = "review1", OK2 = "review2", PLRD2OK2 = "final" }

describe("workflow graphs", function()
  local W = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../workflow_helpers.lua")(H)
  local moonhive, show, counts, run_id_of = W.moonhive, W.show, W.counts, W.run_id_of

  lazy_setup(W.setup)
  lazy_teardown(W.teardown)

  local function step_ids(run)
    local ids = {}
    for i, st in ipairs(run.steps) do ids[i] = st.step end
    return ids
  end

  it("runs steps after their dependencies, the ready ones at once, with inputs from earlier outputs", function()
    local file = W.write("order.lua", [[
local log, active, peak = {}, 0, 0
local function probe(name)
  return agent{name = name, run = function(self, input)
    active = active + 1
    peak = math.max(peak, active)
    log[#log + 1] = "start " .. name
    sleep(50)
    log[#log + 1] = "end " .. name
    active = active - 1
    return name .. "(" .. (type(input) == "table" and json.encode(input) or input) .. ")"
  end}
end
return workflow{
  name = "order",
  steps = {
    join = { agent = probe("join"), after = {"a", "b"}, input = {left = "{{steps.a.output}}", right = "{{steps.b.output}}"} },
    b = { agent = probe("b"), after = {"fetch"}, input = "{{steps.fetch.output}}" },
    a = { agent = probe("a"), after = "fetch", input = "{{steps.fetch.output}}" },
    fetch = { agent = probe("fetch"), input = "{{input.topic}}" },
  },
  output = function(ctx) return {join = ctx.steps.join.output, log = log, peak = peak} end,
}]])
    local res = moonhive({ "run", "--json", file, "--input", '{"topic": "bees"}' })
    assert.equals(0, res.code, H.show(res))
    local rep = cjson.decode(res.stdout)
    assert.equals('join({"left":"a(fetch(bees))","right":"b(fetch(bees))"})', rep.output.join)
    assert.same({ "start fetch", "end fetch", "start a", "start b" }, { table.unpack(rep.output.log, 1, 4) })
    assert.same({ "start join", "end join" }, { table.unpack(rep.output.log, 7, 8) })
    assert.equals(2, rep.output.peak) -- a and b overlapped
    -- the round of two is a wf:parallel, one branch per step in id order
    assert.same({ "1", "2.1.1", "2.2.1", "2", "3" }, step_ids(show(rep.run_id)))
    local plain = moonhive({ "run", file, "--input", '{"topic": "ants"}' })
    assert.matches("[order] ✓ 2.2.1 b: call b", plain.stderr, 1, true)
  end)

  it("runs or skips steps on their conditions; a skipped step counts as finished", function()
    local file = W.write("triage.lua", [[
return workflow{
  name = "triage",
  steps = {
    classify = { agent = "worker", input = "step classify of {{input.tag}} [reply:{{input.kind}} report]" },
    bug = { agent = "worker", after = "classify", when = 'steps.classify.output contains "bug"',
            input = "step bug of {{input.tag}} [reply:fixed]" },
    feature = { agent = "worker", after = "classify", when = 'starts_with(steps.classify.output, "feature") and input.kind != "bug"',
                input = "step feature of {{input.tag}} [reply:planned]" },
    report = { agent = "worker", after = {"bug", "feature"},
               input = "step report of {{input.tag}} [reply:{{steps.bug.status}}/{{steps.feature.status}}/{{steps.bug.output or steps.feature.output}}]" },
  },
}]])
    local bug = moonhive({ "run", file, "--input", '{"tag": "c1", "kind": "bug"}' })
    assert.equals(0, bug.code, H.show(bug))
    assert.equals("done/skipped/fixed\n", bug.stdout) -- the output: the last step that ran
    assert.matches("[triage] ⤼ feature skipped (its 'when' is false)", bug.stderr, 1, true)
    assert.same({ classify = 1, bug = 1, report = 1 }, counts("c1"))
    local feature = moonhive({ "run", file, "--input", '{"tag": "c2", "kind": "feature"}' })
    assert.equals("skipped/done/planned\n", feature.stdout)
    assert.same({ classify = 1, feature = 1, report = 1 }, counts("c2"))
  end)

  it("loops back while the condition holds, and stops at max", function()
    local file = W.write("loops.lua", [[
return workflow{
  name = "loops",
  steps = {
    draft = { agent = "worker", input = "step draft{{steps.draft.runs}} of {{input.tag}} [reply:v{{steps.draft.runs}}]" },
    review = { agent = "worker", after = "draft",
               input = "step review{{steps.review.runs}} of {{input.tag}} [reply:{{steps.draft.runs >= input.approve_at and 'APPROVED' or 'redo'}}]",
               loop = { back_to = "draft", max = 2, when = 'not steps.review.output contains "APPROVED"' } },
    publish = { agent = "worker", after = "review", input = "step publish of {{input.tag}} [reply:published]" },
  },
  output = "{{steps.draft.output}} {{steps.review.output}} after {{steps.review.runs}} reviews",
}]])
    -- approved at the second draft: the condition turns false
    local early = moonhive({ "run", file, "--input", '{"tag": "l1", "approve_at": 2}' })
    assert.equals(0, early.code, H.show(early))
    assert.equals("v1 APPROVED after 2 reviews\n", early.stdout)
    assert.matches("[loops] ⟲ review goes back to draft (1 of at most 2)", early.stderr, 1, true)
    assert.same({ draft0 = 1, draft1 = 1, review0 = 1, review1 = 1, publish = 1 }, counts("l1"))
    -- never approved: back twice (max), then on
    local never = moonhive({ "run", file, "--input", '{"tag": "l2", "approve_at": 99}' })
    assert.equals(0, never.code, H.show(never))
    assert.equals("v2 redo after 3 reviews\n", never.stdout)
    assert.same({ draft0 = 1, draft1 = 1, draft2 = 1, review0 = 1, review1 = 1, review2 = 1, publish = 1 }, counts("l2"))
    assert.is_nil(never.stderr:find("(3 of at most 2)", 1, true))
  end)

  it("retries a step, times one out, and lets its on_error step stand in", function()
    local file = W.write("flaky.lua", [[
return workflow{
  name = "flaky",
  steps = {
    flaky = { agent = "worker", retry = { attempts = 3, backoff = 10 },
              input = "step flaky of {{input.tag}} [fail:2:400:flaky-{{input.tag}}] [reply:steady]" },
    slow = { agent = "worker", after = "flaky", timeout = 200, on_error = "fallback",
             input = "step slow of {{input.tag}} [delay:5000] [reply:late]" },
    fallback = { agent = "worker", input = "step fallback of {{input.tag}} [reply:fallback for {{target.id}}]" },
    last = { agent = "worker", after = "slow",
             input = "step last of {{input.tag}} [reply:{{steps.flaky.output}}, {{steps.slow.status}}, {{steps.slow.output}}]" },
  },
  output = { last = "{{steps.last.output}}", error = "{{steps.slow.error}}" },
}]])
    local res = moonhive({ "run", file, "--input", '{"tag": "r1"}' })
    assert.equals(0, res.code, H.show(res))
    local out = cjson.decode(res.stdout)
    assert.equals("steady, failed, fallback for slow", out.last)
    assert.equals("step 2 wf:call('worker') timed out after 200 ms", out.error)
    assert.matches("[flaky] ↻ 1 flaky: call worker: attempt 3 of 3", res.stderr, 1, true)
    assert.same({ flaky = 3, slow = 1, fallback = 1, last = 1 }, counts("r1"))
    local run = show(run_id_of(res.stderr))
    assert.same({ "1", "2", "3", "4" }, step_ids(run))
    assert.same({ 3, "ok" }, { run.steps[1].attempts, run.steps[1].status })
    assert.equals("error", run.steps[2].status)
  end)

  it("runs compensations latest step first, then on_error, and fails with the step's error", function()
    local graph = W.write("order66.lua", [[
return workflow{
  name = "shop",
  steps = {
    reserve = { agent = "worker", input = "step reserve of {{input.tag}} [reply:R1]", compensate = "release" },
    charge = { agent = "worker", after = "reserve", input = "step charge of {{input.tag}} [reply:C1]", compensate = "refund" },
    ship = { agent = "worker", after = "charge", input = "step ship of {{input.tag}} [status:400]" },
    release = { agent = "worker", input = "step release of {{input.tag}} [reply:released {{target.output}}]" },
    refund = { agent = "worker", input = "step refund of {{input.tag}} [reply:refunded {{target.output}}]" },
    alert = { agent = "worker", input = "step alert of {{input.tag}} {{error}}" },
  },
  on_error = "alert",
}]])
    local res = moonhive({ "run", graph, "--input", '{"tag": "s1"}' })
    assert.equals(1, res.code, H.show(res))
    assert.matches("failed: step 'ship' failed: agent 'worker': the model call failed: openai: mock error 400", res.stderr, 1, true)
    local _, order = counts("s1")
    assert.same({ "reserve", "charge", "ship", "refund", "release", "alert" }, order)
    local run = show(run_id_of(res.stderr))
    assert.equals("failed", run.status)
    assert.same({ "1", "2", "3", "c.1", "c.2", "e.1" }, step_ids(run))
    assert.equals('"refunded C1"', run.steps[4].result)

    -- code: compensations by step id, not by finishing time (two finishes after three)
    local code = W.write("saga.lua", [[
return workflow{
  name = "saga",
  on_error = function(wf, err) wf:call("worker", "step notify of " .. wf.input.tag .. " [reply:told]") end,
  run = function(wf, input)
    local function undo(key)
      return function(output, err)
        wf:call("worker", ("step undo-%s of %s [reply:undid %s]"):format(key, input.tag, output))
      end
    end
    wf:call("worker", "step one of " .. input.tag .. " [reply:1]", {compensate = undo("one")})
    wf:parallel{
      function() return wf:call("worker", "step two of " .. input.tag .. " [reply:2] [delay:150]", {compensate = undo("two")}) end,
      function() return wf:call("worker", "step three of " .. input.tag .. " [reply:3]", {compensate = undo("three")}) end,
    }
    pcall(wf.call, wf, "worker", "step four of " .. input.tag .. " [status:400]", {compensate = undo("four")})
    wf:call("worker", "step five of " .. input.tag .. " [status:400]")
  end,
}]])
    local r = moonhive({ "run", code, "--input", '{"tag": "s2"}' })
    assert.equals(1, r.code, H.show(r))
    local n, seq = counts("s2")
    assert.same({ one = 1, two = 1, three = 1, four = 1, five = 1, ["undo-three"] = 1, ["undo-two"] = 1, ["undo-one"] = 1,
                  notify = 1 }, n) -- four failed: nothing to undo
    assert.same({ "undo-three", "undo-two", "undo-one", "notify" }, { table.unpack(seq, 6) })
    assert.matches("[saga] ↩ compensating step 2.2.1 wf:call('worker')", r.stderr, 1, true)
  end)

  it("finishes an interrupted compensation after SIGKILL, re-running nothing journaled", function()
    local file = W.write("undo.lua", [[
return workflow{
  name = "undo",
  run = function(wf, input)
    local t = input.tag
    wf:parallel{
      function() return wf:call("worker", "step a of " .. t .. " [reply:A]", {compensate = function(out)
        wf:wait_signal("go")
        wf:call("worker", "step undo-a of " .. t .. " [reply:undid " .. out .. "]")
      end}) end,
      function() return wf:call("worker", "step b of " .. t .. " [reply:B]") end,
    }
    wf:call("worker", "step c of " .. t .. " [status:400]")
  end,
}]])
    local p = W.start({ "run", file, "--input", '{"tag": "k1"}' })
    local id
    H.wait_until(function() id = run_id_of(p.stderr()) return id ~= nil end, 10000)
    assert.truthy(id, p.stderr())
    assert.is_true(W.wait_status(id, "waiting"))
    p.kill()
    p.wait()
    H.ok(moonhive({ "runs", "signal", id, "go" }))
    local r = moonhive({ "runs", "resume", id })
    assert.equals(1, r.code, H.show(r))
    assert.matches("failed: agent 'worker': the model call failed: openai: mock error 400", r.stderr, 1, true)
    assert.same({ a = 1, b = 1, c = 1, ["undo-a"] = 1 }, counts("k1"))
    local run = show(id)
    assert.equals("failed", run.status)
    local ids = step_ids(run)
    table.sort(ids)
    assert.same({ "1", "1.1.1", "1.2.1", "2", "c.1", "c.2" }, ids) -- c.1 the wait, c.2 the undo
  end)

  it("runs a graph from a JSON file: its text is the version; the last round's outputs by id", function()
    local text = [[
{
  "description": "two summaries of one fetch",
  "steps": {
    "fetch": {"tool": "calculator", "input": {"expression": "{{input.a}} * {{input.b}}"}},
    "short": {"agent": "worker", "after": "fetch", "input": "step short of {{input.tag}} [reply:short {{steps.fetch.output.result}}]"},
    "long":  {"agent": "worker", "after": "fetch", "input": "step long of {{input.tag}} [reply:long {{steps.fetch.output.result}}]",
              "retry": {"attempts": 2, "backoff_ms": 5}, "timeout": 60000}
  }
}]]
    local file = W.write("summaries.json", text)
    local res = moonhive({ "run", "--json", file, "--input", '{"tag": "j1", "a": 6, "b": 7}' })
    assert.equals(0, res.code, H.show(res))
    local rep = cjson.decode(res.stdout)
    assert.same({ "succeeded", "summaries" }, { rep.status, rep.workflow })
    assert.same({ short = "short 42", long = "long 42" }, rep.output)
    local sha = H.ok(moonhive({ "eval", ("return crypto.sha256(%q)"):format(text) })):gsub("%s+$", "")
    assert.equals(sha, show(rep.run_id).version)

    -- bad JSON names the file and line; a bad graph names the file and the step
    W.write("broken.json", '{\n  "name": "broken",\n  "steps": {\n    "a": {"agent": "worker",}\n  }\n}\n')
    local bad = moonhive({ "run", "broken.json" })
    assert.equals(1, bad.code)
    assert.matches("^broken%.json:4: expected a string key", bad.stderr)
    W.write("cyclic.json", '{"steps": {"a": {"agent": "worker", "after": "b"}, "b": {"agent": "worker", "after": ["a"]}}}')
    assert.matches("cyclic.json: workflow: cyclic: the steps' 'after' make a cycle: a -> b -> a",
                   H.fails(moonhive({ "run", "cyclic.json" })), 1, true)
    W.write("list.json", '[1, 2]')
    assert.matches('list.json: a workflow file holds one object', H.fails(moonhive({ "run", "list.json" })), 1, true)
    assert.matches("cannot open missing.json", H.fails(moonhive({ "run", "missing.json" })), 1, true)
  end)

  it("refuses bad graphs when they are defined, naming the step and the field", function()
    local cases = {
      { "a = {agent = 'worker', after = 'nope'}", "step 'a': 'after' names an unknown step 'nope'" },
      { "a = {agent = 'worker', after = {'b'}}, b = {agent = 'worker', after = {'c'}}, c = {agent = 'worker', after = 'a'}",
        "the steps' 'after' make a cycle: a -> b -> c -> a (to repeat steps, use loop = {back_to=, max=})" },
      { "a = {agent = 'worker', loop = {back_to = 'zz', max = 2}}", "step 'a': loop.back_to must name a step ('zz' is not one)" },
      { "a = {agent = 'worker'}, b = {agent = 'worker', loop = {back_to = 'a', max = 2}}",
        "step 'b': loop.back_to 'a' is not an earlier step (it must be 'b' itself or a step 'b' runs after)" },
      { "a = {agent = 'worker', loop = {back_to = 'a', max = 0}}", "step 'a': loop.max must be a whole number >= 1" },
      { "a = {agent = 'worker', loop = {back_to = 'a'}}", "step 'a': loop.max must be a whole number >= 1" },
      { "a = {input = 'x'}", "step 'a': needs agent= (an agent's name) or tool= (a built-in tool's name)" },
      { "a = {agent = 'worker', tool = 'calculator'}", "step 'a': has both agent= and tool=; give one" },
      { "a = {tool = 'teleport'}", "step 'a': no built-in tool 'teleport'" },
      { "a = {agent = 'worker', retry = {attempts = 0}}", "step 'a': retry.attempts must be a whole number >= 1" },
      { "a = {agent = 'worker', retry = {attempts = 2, backoff = -1}}", "step 'a': retry.backoff must be a number >= 0" },
      { "a = {agent = 'worker', retry = {tries = 2}}", "step 'a': retry has an unknown field 'tries'" },
      { "a = {agent = 'worker', timeout = 0}", "step 'a': 'timeout' must be milliseconds > 0" },
      { "a = {agent = 'worker', when = 'input.x =='}",
        "step 'a': when: expression error at column 11: expected a value, found the end of the expression" },
      { "a = {agent = 'worker', input = 'hi {{input.x +}}'}", "step 'a': input: expression error at column 14: unexpected character '+'" },
      { "a = {agent = 'worker', when = 'steps.b.output'}", "step 'a': when: expression error at column 1: unknown step 'b'" },
      { "a = {agent = 'worker', when = 'inptu.x'}", "step 'a': when: expression error at column 1: unknown name 'inptu'" },
      { "a = {agent = 'worker', aftr = 'b'}", "step 'a': unknown field 'aftr'" },
      { "a = {agent = 'worker', on_error = 'h'}, h = {agent = 'worker', after = 'a'}",
        "step 'h': is the on_error of step 'a', so it runs only when called for and cannot have 'after'" },
      { "a = {agent = 'worker', compensate = 'h'}, h = {agent = 'worker'}, b = {agent = 'worker', after = 'h'}",
        "step 'b': 'after' names 'h', which is the compensate of step 'a' and runs only when called for" },
      { "a = {agent = 'worker', on_error = 'nope'}", "step 'a': on_error names an unknown step 'nope'" },
      { "['bad-id'] = {agent = 'worker'}", "step id 'bad-id' must be letters, digits and '_'" },
      { "", "'steps' is empty" },
    }
    for _, case in ipairs(cases) do
      local res = moonhive({ "eval", "return workflow{name = 'g', steps = {" .. case[1] .. "}}" })
      assert.equals(1, res.code, case[1])
      assert.matches("workflow: g: " .. case[2], res.stderr, 1, true)
    end
    assert.matches("workflow: g: give either 'run' (code) or 'steps' (a graph), not both",
                   H.fails(moonhive({ "eval", "return workflow{name = 'g', run = print, steps = {a = {agent = 'w'}}}" })), 1, true)
    assert.matches("workflow: g: unknown field 'ouput' in a graph workflow",
                   H.fails(moonhive({ "eval", "return workflow{name = 'g', ouput = 'a', steps = {a = {agent = 'w'}}}" })), 1, true)
    assert.matches("wf:call: compensate must be a function(output, err)",
                   H.fails(moonhive({ "run", W.write("badopt.lua",
                     "return workflow{name = 'badopt', run = function(wf) wf:call('worker', 'x', {compensate = 'undo'}) end}") })), 1, true)
  end)

  it("survives SIGKILL at 10 random points of a JSON graph: nothing journaled runs again", function()
    local file = W.write("crashgraph.json", CRASH_JSON)
    local crashed, how = W.kill_trials(file, { trials = 10, max_ms = 600, output = CRASH_OUT, keys = CRASH_KEYS,
                                               key_of = function(result) return REPLY_KEY[result] end,
                                               check = function(n) assert.is_nil(n.extra, "a skipped step ran") end })
    assert.is_true(crashed >= 3, "only " .. crashed .. " of 10 trials killed a run mid-way (" .. how .. ")")
  end)
end)
