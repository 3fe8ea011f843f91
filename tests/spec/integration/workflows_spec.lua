-- Durable workflows end to end: `moonhive run` of a workflow{} file, its
-- steps journaled, the process killed with SIGKILL at random points and
-- `moonhive runs resume` finishing the run with the same output, every
-- journaled step executed exactly once (the mock LLM server's request log
-- counts each step's unique prompt); signals across a restart; fan-out and
-- fan-in; retries, timeouts; nondeterminism; cancellation; versions.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"
local uv = require "luv"

-- Four sequential model calls, a fan-out of two, a durable sleep and a map
-- of three (two at a time): every call has a prompt unique to the trial
-- ("step K of TAG") and a [delay] so a kill lands anywhere.
local CRASHY = [[
return workflow{
  name = "crashy",
  run = function(wf, input)
    local function ask(key, ms) return wf:call("worker", ("step %s of %s [delay:%d] [reply:r%s]"):format(key, input.tag, ms, key)) end
    local out = {}
    for i = 1, 4 do out[i] = ask(tostring(i), 40) end
    wf.memory.seen = #out
    local fan = wf:parallel{ function() return ask("p1", 60) end, function() return ask("p2", 30) end }
    wf:sleep(40)
    local m = wf:map({"a", "b", "c"}, function(x) return ask("m" .. x, 25) end, {concurrency = 2})
    return table.concat(out, ",") .. "|" .. table.concat(fan, ",") .. "|" .. table.concat(m, ",") .. "|" .. wf.memory.seen
  end,
}]]
local CRASHY_OUT = "r1,r2,r3,r4|rp1,rp2|rma,rmb,rmc|4"
local CRASHY_KEYS = { "1", "2", "3", "4", "p1", "p2", "ma", "mb", "mc" }

local APPROVAL = [[
return workflow{
  name = "approval",
  run = function(wf, input)
    local draft = wf:call("worker", "step draft of " .. input.tag .. " [reply:a draft]")
    local answer = wf:wait_signal("approve")
    local final = wf:call("worker", "step final of " .. input.tag .. " [reply:final]")
    return {draft = draft, answer = answer, final = final}
  end,
}]]

describe("workflows", function()
  local W = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../workflow_helpers.lua")(H)
  local moonhive, start, show, counts, wait_status, run_id_of = W.moonhive, W.start, W.show, W.counts, W.wait_status,
                                                                W.run_id_of
  local function write_wf(name, src) return W.write(name .. ".lua", src) end

  lazy_setup(W.setup)
  lazy_teardown(W.teardown)

  it("runs a workflow: steps on stderr, the output on stdout, the journal in runs show", function()
    local file = write_wf("crashy", CRASHY)
    local res = moonhive({ "run", file, "--input", '{"tag": "plain"}' })
    assert.equals(0, res.code, H.show(res))
    assert.equals(CRASHY_OUT .. "\n", res.stdout)
    assert.matches("[crashy] ✓ 5.2.1 call worker", res.stderr, 1, true)
    assert.matches("[crashy] succeeded", res.stderr, 1, true)
    local run = show(run_id_of(res.stderr))
    assert.equals("succeeded", run.status)
    assert.equals("workflow", run.kind)
    assert.equals(64, #run.version)
    assert.equals(4 + 3 + 1 + 4, #run.steps) -- 4 calls, parallel + 2, sleep, map + 3
    -- each journaled step is one step_done event of the run, numbered among
    -- its other events, after the model calls the step made
    local done_at, last, calls = {}, 0, 0
    for _, ev in ipairs(run.events) do
      assert.is_true(ev.seq > last, "events out of order")
      last = ev.seq
      if ev.kind == "step_done" then
        assert.is_nil(done_at[ev.data.step], "two step_done events for one step")
        done_at[ev.data.step] = ev.seq
        assert.same({ "ok", 1 }, { ev.data.status, ev.data.attempts })
        assert.is_nil(ev.data.error)
        if ev.data.kind == "call" then
          calls = calls + 1
          assert.equals(ev.data.name, ev.agent)
        end
      elseif ev.step then
        assert.is_nil(done_at[ev.step], "a model call recorded after its step was done")
      end
    end
    local journaled_calls = 0
    for _, st in ipairs(run.steps) do
      assert.truthy(done_at[st.step], st.step)
      if st.kind == "call" then journaled_calls = journaled_calls + 1 end
    end
    assert.is_true(calls > 0)
    assert.equals(journaled_calls, calls)
    for _, key in ipairs(CRASHY_KEYS) do assert.equals(1, counts("plain")[key], key) end
    local j = cjson.decode(H.ok(moonhive({ "run", "--json", file, "--input", '{"tag": "json"}' })))
    assert.same({ "succeeded", CRASHY_OUT }, { j.status, j.output })
    assert.equals(12, j.steps.executed)
  end)

  it("survives SIGKILL at 20 random points: nothing journaled is lost or executed twice", function()
    local file = write_wf("crashy", CRASHY)
    local crashed, how = W.kill_trials(file, { trials = 20, max_ms = 700, output = CRASHY_OUT, keys = CRASHY_KEYS,
                                               key_of = function(result) return result:sub(2) end })
    assert.is_true(crashed >= 5, "only " .. crashed .. " of 20 trials killed a run mid-way (" .. how .. ")")
  end)

  it("a human-in-the-loop wait survives a restart, on the version the run started with", function()
    local file = write_wf("approval", APPROVAL)
    local p = start({ "run", file, "--input", '{"tag": "hitl"}' })
    local id
    H.wait_until(function() id = run_id_of(p.stderr()) return id ~= nil end, 10000)
    assert.truthy(id, p.stderr())
    assert.is_true(wait_status(id, "waiting"))
    p.kill()
    p.wait()
    -- the draft step's usage is kept with its journal entry; an unfinished
    -- run shows it in its totals all the same
    local function usage_of_calls(run)
      local sum = { 0, 0 }
      for _, ev in ipairs(run.events) do
        if ev.kind == "model_call" then sum = { sum[1] + ev.data.usage.input, sum[2] + ev.data.usage.output } end
      end
      return sum
    end
    local waiting = show(id)
    local draft_usage = usage_of_calls(waiting)
    assert.is_true(draft_usage[1] > 0 and draft_usage[2] > 0)
    assert.same(draft_usage, { waiting.tokens_in, waiting.tokens_out })
    local listed
    for _, r in ipairs(cjson.decode(H.ok(moonhive({ "runs", "list", "--json" })))) do
      if r.id == id then listed = r end
    end
    assert.same(draft_usage, { listed.tokens_in, listed.tokens_out })
    -- an edit after the start does not change the run in flight
    write_wf("approval", 'return workflow{name = "approval", run = function() return "edited" end}')
    H.ok(moonhive({ "runs", "signal", id, "approve", '{"by": "ann", "ok": true}' }))
    local r = moonhive({ "runs", "resume", id, "--json" })
    assert.equals(0, r.code, H.show(r))
    assert.same({ draft = "a draft", answer = { by = "ann", ok = true }, final = "final" }, cjson.decode(r.stdout).output)
    assert.same({ draft = 1, final = 1 }, counts("hitl"))
    -- once finished, the run's own row holds both steps' usage, once each
    local done = show(id)
    local both = usage_of_calls(done)
    assert.is_true(both[1] > draft_usage[1])
    assert.same(both, { done.tokens_in, done.tokens_out })
    local shown = H.ok(moonhive({ "runs", "show", id }))
    assert.matches("signal approve", shown, 1, true)
    H.fails(moonhive({ "runs", "signal", id, "approve" }))
  end)

  it("signals reach a running process; wait_signal times out as nil, 'timeout'", function()
    local file = write_wf("waiter", [[
return workflow{name = "waiter", run = function(wf)
  local late, why = wf:wait_signal("never", {timeout = 200})
  return {wf:wait_signal("go"), late == nil, why}
end}]])
    local p = start({ "run", "--json", file })
    local id
    H.wait_until(function()
      local r = moonhive({ "runs", "--json", "--limit", "1" })
      local rows = cjson.decode(r.stdout)
      id = rows[1] and rows[1].agent == "waiter" and rows[1].status == "waiting" and rows[1].id
      return id
    end, 10000)
    assert.truthy(id)
    H.ok(moonhive({ "runs", "signal", id, "go", "plain text" }))
    local res = p.wait()
    assert.equals(0, res.code, H.show(res))
    assert.same({ "plain text", true, "timeout" }, cjson.decode(res.stdout).output)
  end)

  it("fans out and in: parallel branches and a bounded map run concurrently", function()
    local file = write_wf("fan", [[
local slow = agent{name = "slow", run = function(self, input) sleep(200) return input * 10 end}
return workflow{name = "fan", run = function(wf)
  local t0 = wf:now()
  local p = wf:parallel{function() return wf:call(slow, 1) end, function() return wf:call(slow, 2) end,
                        function() return wf:call(slow, 3) end}
  local t1 = wf:now()
  local m = wf:map({1, 2, 3, 4}, function(x) return wf:call(slow, x) end, {concurrency = 2})
  local t2 = wf:now()
  return {p = p, m = m, parallel_ms = (t1 - t0) * 1000, map_ms = (t2 - t1) * 1000}
end}]])
    local out = cjson.decode(H.ok(moonhive({ "run", "--json", file }))).output
    assert.same({ 10, 20, 30 }, out.p)
    assert.same({ 10, 20, 30, 40 }, out.m)
    assert.is_true(out.parallel_ms < 500, "parallel took " .. out.parallel_ms)
    assert.is_true(out.map_ms >= 390 and out.map_ms < 700, "map took " .. out.map_ms)
  end)

  it("retries a step with backoff, only on the errors asked for; step and run timeouts", function()
    local file = write_wf("flaky", [[
local tries = 0
local flaky = agent{name = "flaky", run = function() tries = tries + 1 if tries < 3 then error("flaky failure " .. tries, 0) end return "ok after " .. tries end}
local never = agent{name = "never", run = function() error("permanent", 0) end}
local slow = agent{name = "slow", run = function() sleep(2000) return "late" end}
return workflow{name = "flaky", run = function(wf)
  local a = wf:call(flaky, "x", {retry = {attempts = 3, backoff_ms = 20, on = {"flaky"}}})
  local ok, e = pcall(wf.call, wf, never, "y", {retry = {attempts = 5, backoff_ms = 10, on = {"flaky"}}})
  local ok2, e2 = pcall(wf.call, wf, slow, "z", {timeout = 100})
  return {a, ok, e, ok2, e2}
end}]])
    local res = moonhive({ "run", file })
    assert.equals(0, res.code, H.show(res))
    local out = cjson.decode(res.stdout)
    assert.same({ "ok after 3", false, "permanent", false, "step 3 wf:call('slow') timed out after 100 ms" }, out)
    assert.matches("attempt 3 of 3", res.stderr, 1, true)
    local run = show(run_id_of(res.stderr))
    assert.same({ 3, 1, 1 }, { run.steps[1].attempts, run.steps[2].attempts, run.steps[3].attempts })

    local t = write_wf("slowrun", [[return workflow{name = "slowrun", timeout = 300, run = function(wf) wf:sleep(5000) return 1 end}]])
    local r = moonhive({ "run", t })
    assert.equals(1, r.code, H.show(r))
    assert.matches("workflow 'slowrun' timed out after 300 ms", r.stderr, 1, true)
    assert.equals("failed", show(run_id_of(r.stderr)).status)
  end)

  it("reports code that behaves differently on replay", function()
    local file = write_wf("nondet", [[
return workflow{name = "nondet", run = function(wf, input)
  if time.now() < input.switch_at then wf:call("worker", "step a of nondet [reply:a]")
  else wf:tool("calculator", {expression = "1+1"}) end
  return wf:wait_signal("go")
end}]])
    local switch_at = uv.gettimeofday() + 1.5
    local p = start({ "run", file, "--input", ('{"switch_at": %.3f}'):format(switch_at) })
    local id
    H.wait_until(function() id = run_id_of(p.stderr()) return id ~= nil end, 10000)
    assert.is_true(wait_status(id, "waiting"))
    p.kill()
    p.wait()
    H.wait_until(function() return uv.gettimeofday() > switch_at + 0.1 end, 5000)
    local r = moonhive({ "runs", "resume", id })
    assert.equals(1, r.code, H.show(r))
    assert.matches("nondeterministic replay: step 1 was wf:call('worker') but is now wf:tool('calculator')", r.stderr, 1, true)
    assert.equals("failed", show(id).status)
  end)

  -- a sleeping run asks nothing of the store: only the process's watch loop
  -- (every 250 ms) can notice another process's cancellation and wake it
  it("cancels a sleeping run from another process: its watch wakes it", function()
    local file = write_wf("cz", [[return workflow{name = "cz", run = function(wf) wf:sleep(60000) return "slept" end}]])
    local p = start({ "run", file })
    local id
    H.wait_until(function() id = run_id_of(p.stderr()) return id ~= nil end, 10000)
    assert.is_true(H.wait_until(function() return #(show(id).steps or {}) > 0 end, 10000)) -- in its sleep
    assert.matches("cancelled", H.ok(moonhive({ "runs", "cancel", id })))
    local res = p.wait(10000)
    assert.is_nil(res.timed_out, "the sleeping run was not woken: " .. H.show(res))
    assert.equals(1, res.code, H.show(res))
    assert.matches("cancelled", res.stderr)
    assert.equals("cancelled", show(id).status)
  end)

  it("cancels a run: the process stops, resume leaves it alone; resume without an id", function()
    local file = write_wf("cx", [[return workflow{name = "cx", run = function(wf) wf:wait_signal("go") return "done" end}]])
    local p = start({ "run", file })
    local id
    H.wait_until(function() id = run_id_of(p.stderr()) return id ~= nil end, 10000)
    assert.is_true(wait_status(id, "waiting"))
    assert.matches("cancelled", H.ok(moonhive({ "runs", "cancel", id })))
    local res = p.wait()
    assert.equals(1, res.code, H.show(res))
    assert.matches("cancelled", res.stderr)
    assert.equals("cancelled", show(id).status)
    assert.matches("nothing to resume", H.fails(moonhive({ "runs", "resume", id })))

    -- two runs killed while waiting; `runs resume` with no id finishes both
    local ids = {}
    for i = 1, 2 do
      local q = start({ "run", file })
      H.wait_until(function() ids[i] = run_id_of(q.stderr()) return ids[i] ~= nil end, 10000)
      assert.is_true(wait_status(ids[i], "waiting"))
      q.kill()
      q.wait()
      H.ok(moonhive({ "runs", "signal", ids[i], "go" }))
    end
    local all = moonhive({ "runs", "resume", "--json" })
    assert.equals(0, all.code, H.show(all))
    local reports = cjson.decode(all.stdout)
    assert.equals(2, #reports)
    for _, rep in ipairs(reports) do assert.same({ "succeeded", "done" }, { rep.status, rep.output }) end
    assert.matches("no unfinished", moonhive({ "runs", "resume" }).stderr)
  end)
end)
