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
  local P, project, llm_srv -- H.mock_project

  local function env(extra) return P.env(extra) end
  local function moonhive(args, extra) return P.moonhive(args, extra) end

  local function write_wf(name, src)
    H.write(project .. "/" .. name .. ".lua", src)
    return name .. ".lua"
  end

  -- Starts `moonhive ARGS` in the background (H.start); p.kill() kills it with SIGKILL.
  local function start(args)
    local p = H.start(args, { cwd = project, env = env() })
    local kill = p.kill
    function p.kill() kill("sigkill") end
    return p
  end

  local function run_id_of(text) return text:match("run (%x+%-%x+) started") end

  local function show(id)
    return cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" })))
  end

  -- Requests the mock model received for prompts "step KEY of TAG": {KEY = n}.
  local function counts(tag)
    local n = {}
    for _, r in ipairs(H.mock_requests(llm_srv)) do
      local msgs = type(r.body) == "table" and r.body.messages or {}
      for _, m in ipairs(msgs) do
        local key = m.role == "user" and type(m.content) == "string" and m.content:match("^step (%S+) of " .. H.lit(tag) .. " ")
        if key then n[key] = (n[key] or 0) + 1 end
      end
    end
    return n
  end

  local function wait_status(id, status)
    return H.wait_until(function()
      local r = moonhive({ "runs", "show", id, "--json" })
      return r.code == 0 and cjson.decode(r.stdout).status == status
    end, 10000)
  end

  lazy_setup(function()
    P = H.mock_project('return agent{name = "worker", system = "You work."}')
    project, llm_srv = P.dir, P.llm
  end)
  lazy_teardown(function()
    P.stop()
    H.cleanup()
  end)

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
    for _, key in ipairs(CRASHY_KEYS) do assert.equals(1, counts("plain")[key], key) end
    local j = cjson.decode(H.ok(moonhive({ "run", "--json", file, "--input", '{"tag": "json"}' })))
    assert.same({ "succeeded", CRASHY_OUT }, { j.status, j.output })
    assert.equals(12, j.steps.executed)
  end)

  it("survives SIGKILL at 20 random points: nothing journaled is lost or executed twice", function()
    local file = write_wf("crashy", CRASHY)
    math.randomseed(os.time())
    local crashed = 0
    for trial = 1, 20 do
      local tag = "t" .. trial .. "-" .. math.random(1e6)
      local p = start({ "run", file, "--input", ('{"tag": "%s"}'):format(tag) })
      local delay = math.random(0, 700)
      local timer = uv.new_timer()
      timer:start(delay, 0, function() p.kill() end)
      local res = p.wait()
      timer:close()
      H.flush()
      local id = run_id_of(res.stderr)
      local before = counts(tag)
      if not id then
        -- killed before the run was created: nothing may have run
        assert.same({}, before, "trial " .. trial)
      else
        local run = show(id)
        if run.status == "succeeded" then
          assert.equals(CRASHY_OUT, run.output)
        else
          crashed = crashed + 1
          local journaled = {}
          for _, st in ipairs(run.steps or {}) do
            if st.kind == "call" and st.status == "ok" then journaled[cjson.decode(st.result):sub(2)] = true end
          end
          local r = moonhive({ "runs", "resume", id, "--json" })
          assert.equals(0, r.code, "trial " .. trial .. " (killed at " .. delay .. " ms)\n" .. H.show(r))
          assert.equals(CRASHY_OUT, cjson.decode(r.stdout).output)
          local after = counts(tag)
          for _, key in ipairs(CRASHY_KEYS) do
            local msg = ("trial %d, step %s, killed at %d ms"):format(trial, key, delay)
            if journaled[key] then
              assert.equals(1, after[key], msg .. ": journaled, so never executed again")
            else
              assert.is_true((after[key] or 0) - (before[key] or 0) == 1, msg .. ": executed once on resume")
            end
          end
          assert.equals("succeeded", show(id).status)
        end
        for _, key in ipairs(CRASHY_KEYS) do assert.is_true((counts(tag)[key] or 0) >= 1, key) end
      end
    end
    assert.is_true(crashed >= 5, "only " .. crashed .. " of 20 trials killed a run mid-way")
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
    -- an edit after the start does not change the run in flight
    write_wf("approval", 'return workflow{name = "approval", run = function() return "edited" end}')
    H.ok(moonhive({ "runs", "signal", id, "approve", '{"by": "ann", "ok": true}' }))
    local r = moonhive({ "runs", "resume", id, "--json" })
    assert.equals(0, r.code, H.show(r))
    assert.same({ draft = "a draft", answer = { by = "ann", ok = true }, final = "final" }, cjson.decode(r.stdout).output)
    assert.same({ draft = 1, final = 1 }, counts("hitl"))
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
