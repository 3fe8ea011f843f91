-- Hot reload end to end: `moonhive run --watch` on a project with agents/
-- and workflows/, files edited while runs are in flight (each run fans out
-- model calls to a slow mock model and then waits for a signal, so several
-- are in flight at every edit). New runs take each new version; runs in
-- flight finish on theirs, agents included; an edit that does not load is
-- reported as file:line and changes nothing; the runs and the journal
-- record the content hash of the workflow and of every agent a wf:call ran;
-- a resumed run calls the agent version it journaled; SIGTERM stops.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"
local uv = require "luv"

local WAIT = 60000 -- an upper bound only: every wait polls for a condition

-- Turns the loop until pred() holds (or WAIT passes); a ticking timer wakes
-- the loop to ask again even while the watched process says nothing.
local function wait_for(pred)
  local tick = uv.new_timer()
  tick:start(50, 50, function() end)
  local ok = H.wait_until(pred, WAIT)
  tick:stop()
  tick:close()
  H.flush()
  return ok
end

-- A workflow marked V: a bounded fan-out of slow model calls to the worker,
-- then a wait for "go", then a call of the closer (its first use) whose
-- prompt names the run.
local function workflow_v(v)
  return ([[
return workflow{
  name = "loaded",
  run = function(wf, input)
    local outs = wf:map({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, function(i)
      return wf:call("worker", ("item %d of %s [delay:40] [reply:%s-%d]"):format(i, "V", "V", i))
    end, {concurrency = 4})
    wf:wait_signal("go")
    local last = wf:call("closer", "final of " .. wf.id .. " [reply:V-final]")
    local after = wf:call("worker", "after of " .. wf.id .. " [reply:V-after]")
    return {version = "V", n = #outs, first = outs[1], last = last, after = after}
  end,
}
]]):gsub("V", v)
end

local function agent_v(v, name)
  return ('return agent{name = "%s", system = "You are %s %s."}\n'):format(name or "worker", name or "worker", v)
end

describe("hot reload", function()
  local project, llm_srv

  local function env()
    return { MOONHIVE_DATA = project .. "/.moonhive", MOONHIVE_MODEL = "openai/x", OPENAI_API_KEY = "sk-test-reload",
             OPENAI_BASE_URL = llm_srv.url("/v1"), ANTHROPIC_API_KEY = false, MOONHIVE_PROJECT = false }
  end

  local function moonhive(args) return H.moonhive(args, { cwd = project, env = env() }) end

  -- `moonhive ARGS` in the background (helpers.lua's H.start): .out(), .err(), .signal(name), .wait().
  local function start(args, extra)
    local e = env()
    for k, v in pairs(extra or {}) do e[k] = v end
    local p = H.start(args, { cwd = project, env = e })
    p.out, p.err = p.stdout, p.stderr
    local wait = p.wait
    function p.wait() return wait(WAIT) end
    return p
  end

  local function sha(text)
    return (H.ok(moonhive({ "eval", ("return crypto.sha256(%q)"):format(text) })):gsub("%s+$", ""))
  end

  local function runs_of(name)
    local list = cjson.decode(H.ok(moonhive({ "runs", "list", "--json", "--limit", "200" })))
    local out = {}
    for _, r in ipairs(list) do if r.agent == name then out[#out + 1] = r end end
    return out
  end

  local function count_status(name, status)
    local n = 0
    for _, r in ipairs(runs_of(name)) do if r.status == status then n = n + 1 end end
    return n
  end

  local function show(id) return cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" }))) end

  -- The system prompt of the mock model's request whose user message matches pattern.
  local function system_for(pattern)
    local body = H.ok(moonhive({ "eval", ("return assert(http.get(%q)).body"):format(llm_srv.url("/_requests")) }))
    for _, r in ipairs(cjson.decode(body)) do
      local msgs = type(r.body) == "table" and r.body.messages or {}
      local sys, hit
      for _, m in ipairs(msgs) do
        if m.role == "system" then sys = m.content end
        if m.role == "user" and type(m.content) == "string" and m.content:find(pattern, 1, true) then hit = true end
      end
      if hit then return sys end
    end
  end

  local function write(rel, text) return H.write(project .. "/" .. rel, text) end

  -- An editor's atomic save: a temporary file renamed over the old one.
  local function save_by_rename(rel, text)
    local tmp = project .. "/" .. rel:gsub("([^/]+)$", ".%1.swp")
    H.write(tmp, text)
    assert(os.rename(tmp, project .. "/" .. rel))
  end

  local function json_lines(text)
    local out = {}
    for line in text:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
    return out
  end

  lazy_setup(function()
    llm_srv = H.start_mockllm()
  end)
  lazy_teardown(function()
    llm_srv.stop()
    H.cleanup()
  end)

  before_each(function()
    project = H.tmpdir()
    uv.fs_mkdir(project .. "/agents", 448)
    uv.fs_mkdir(project .. "/workflows", 448)
  end)

  it("under load: new runs take each new version, runs in flight finish on theirs, agents included", function()
    write("agents/worker.lua", agent_v("A1"))
    write("agents/closer.lua", agent_v("C1", "closer"))
    write("workflows/loaded.lua", workflow_v("W1"))
    local p = start({ "run", "--watch", "--deadline", "0", "--json", "workflows/loaded.lua" })
    local hashes, W = {}, { "W1", "W2", "W3", "W4", "W5", "W6" }
    -- one run per saved version, each saved while the previous runs' calls are in flight
    for i, v in ipairs(W) do
      hashes[v] = sha(workflow_v(v))
      if i == 2 then save_by_rename("workflows/loaded.lua", workflow_v(v))
      elseif i > 1 then write("workflows/loaded.lua", workflow_v(v)) end
      local line = ("run %d on version %s"):format(i, hashes[v]:sub(1, 12))
      assert.is_true(wait_for(function() return p.err():find(line, 1, true) ~= nil end),
                     "waiting for: " .. line .. "\n" .. p.err())
    end
    assert.is_true(wait_for(function() return count_status("loaded", "waiting") == 6 end), p.err())

    -- an edit that does not compile: reported as file:line, the old version stays
    write("workflows/loaded.lua", workflow_v("W7"):gsub("local last =", "local last = =", 1))
    assert.is_true(wait_for(function() return p.err():find("[reload] workflows/loaded.lua:8: unexpected symbol near '='", 1, true) ~= nil end), p.err())
    assert.matches("keeping version " .. hashes.W6:sub(1, 12), p.err(), 1, true)
    -- one that compiles but does not define a workflow, and one whose workflow{} is wrong
    write("workflows/loaded.lua", "local x = 1\nreturn 'not a workflow'\n")
    assert.is_true(wait_for(function() return p.err():find("[reload] workflows/loaded.lua:2: returns a string, not a workflow{}", 1, true) ~= nil end), p.err())
    write("workflows/loaded.lua", 'return workflow{\n  name = "bad name!",\n  run = function() end,\n}\n')
    assert.is_true(wait_for(function() return p.err():find("[reload] workflows/loaded.lua:1: workflow: 'name' must be", 1, true) ~= nil end), p.err())

    -- an agent no run has used yet changes: no run (the runs in flight keep
    -- the version they started with); then the workflow's worker changes: a
    -- new run on the kept workflow version (W6) and both new agents
    write("agents/closer.lua", agent_v("C2", "closer"))
    assert.is_true(wait_for(function() return p.err():find("[reload] agents/closer.lua: version", 1, true) ~= nil end), p.err())
    local a1, a2 = sha(agent_v("A1")), sha(agent_v("A2"))
    local c1, c2 = sha(agent_v("C1", "closer")), sha(agent_v("C2", "closer"))
    write("agents/worker.lua", agent_v("A2"))
    local line7 = ("agents/worker.lua changed: run 7 on version %s"):format(hashes.W6:sub(1, 12))
    assert.is_true(wait_for(function() return p.err():find(line7, 1, true) ~= nil end), p.err())
    assert.is_true(wait_for(function() return count_status("loaded", "waiting") == 7 end), p.err())
    assert.is_nil(p.err():find("run 8 ", 1, true), p.err())

    -- let every run finish: each on the versions it started with
    for _, r in ipairs(runs_of("loaded")) do H.ok(moonhive({ "runs", "signal", r.id, "go" })) end
    assert.is_true(wait_for(function() return #json_lines(p.out()) == 7 end), p.out() .. p.err())
    p.signal("sigterm")
    local res = p.wait()
    assert.equals(0, res.code, H.show(res))
    assert.matches("[watch] stopped", res.stderr, 1, true)

    local by_version, on_new = {}, 0
    for _, rep in ipairs(json_lines(res.stdout)) do
      assert.equals("succeeded", rep.status, cjson.encode(rep))
      local v = rep.output.version
      assert.equals(hashes[v], rep.version, "run " .. rep.run_id .. " reports the version it ran")
      assert.same({ 12, v .. "-1", v .. "-final", v .. "-after" },
                  { rep.output.n, rep.output.first, rep.output.last, rep.output.after })
      by_version[v] = (by_version[v] or 0) + 1
      -- the runs table and the journal: the workflow's hash, and each wf:call's agent hash
      local run = show(rep.run_id)
      assert.equals(hashes[v], run.version)
      -- runs 1-6 started on worker A1 and closer C1 and keep them (the closer
      -- is first called after it changed); run 7 started on A2 and C2
      local sys = system_for("final of " .. rep.run_id)
      local newer = sys == "You are closer C2."
      if newer then on_new = on_new + 1 assert.equals("W6", v)
      else assert.equals("You are closer C1.", sys) end
      local n = 0
      for _, st in ipairs(run.steps) do
        if st.kind == "call" then
          n = n + 1
          local want = st.name == "closer" and (newer and c2 or c1) or (newer and a2 or a1)
          assert.equals(want, st.version, "step " .. st.step .. " of " .. v)
        end
      end
      assert.equals(14, n)
    end
    assert.same({ W1 = 1, W2 = 1, W3 = 1, W4 = 1, W5 = 1, W6 = 2 }, by_version)
    assert.equals(1, on_new, "only the run started after the agents changed uses their new versions")
  end)

  it("polls when asked to (MOONHIVE_WATCH=poll): same reloads, same reports", function()
    write("agents/worker.lua", agent_v("A1"))
    write("agents/closer.lua", agent_v("C1", "closer"))
    write("workflows/loaded.lua", workflow_v("P1"))
    local p = start({ "run", "--watch", "--deadline", "0", "--json", "workflows/loaded.lua" }, { MOONHIVE_WATCH = "poll" })
    assert.is_true(wait_for(function() return p.err():find("run 1 on version", 1, true) ~= nil end), p.err())
    assert.matches("polling", p.err(), 1, true)
    write("workflows/loaded.lua", workflow_v("P2"))
    local line = "run 2 on version " .. sha(workflow_v("P2")):sub(1, 12)
    assert.is_true(wait_for(function() return p.err():find(line, 1, true) ~= nil end), p.err())
    write("workflows/loaded.lua", "return workflow{\n")
    assert.is_true(wait_for(function() return p.err():find("[reload] workflows/loaded.lua:2:", 1, true) ~= nil end), p.err())
    assert.is_true(wait_for(function() return count_status("loaded", "waiting") == 2 end), p.err())
    for _, r in ipairs(runs_of("loaded")) do H.ok(moonhive({ "runs", "signal", r.id, "go" })) end
    assert.is_true(wait_for(function() return #json_lines(p.out()) == 2 end), p.out() .. p.err())
    p.signal("sigint")
    local res = p.wait()
    assert.equals(0, res.code, H.show(res))
    local seen = {}
    for _, rep in ipairs(json_lines(res.stdout)) do seen[#seen + 1] = rep.output.version end
    table.sort(seen)
    assert.same({ "P1", "P2" }, seen)
  end)

  it("stops on SIGTERM with runs in flight; they resume on their versions, agents included", function()
    write("agents/worker.lua", agent_v("A1"))
    write("agents/closer.lua", agent_v("C1", "closer"))
    write("workflows/loaded.lua", workflow_v("R1"))
    local p = start({ "run", "--watch", "--deadline", "0", "workflows/loaded.lua" })
    assert.is_true(wait_for(function() return count_status("loaded", "waiting") == 1 end), p.err())
    p.signal("sigterm")
    local res = p.wait()
    assert.equals(0, res.code, H.show(res))
    assert.matches("[watch] stopped; 1 run in flight cancelled", res.stderr, 1, true)
    local id = runs_of("loaded")[1].id
    -- the files change while the run is stopped
    write("agents/worker.lua", agent_v("A2"))
    write("agents/closer.lua", agent_v("C2", "closer"))
    write("workflows/loaded.lua", workflow_v("R2"))
    H.ok(moonhive({ "runs", "signal", id, "go" }))
    local r = moonhive({ "runs", "resume", id, "--json" })
    assert.equals(0, r.code, H.show(r))
    local rep = cjson.decode(r.stdout)
    assert.equals("R1", rep.output.version)
    assert.equals(sha(workflow_v("R1")), rep.version)
    -- the worker runs again after the stop on the version its journaled
    -- calls ran (A1); the closer, never called before the stop, loads as it is now
    assert.equals("You are worker A1.", system_for("after of " .. id))
    assert.equals("You are closer C2.", system_for("final of " .. id))
    local steps = show(id).steps
    assert.same({ "closer", sha(agent_v("C2", "closer")) }, { steps[#steps - 1].name, steps[#steps - 1].version })
    assert.same({ "worker", sha(agent_v("A1")) }, { steps[#steps].name, steps[#steps].version })
  end)

  it("watches an agent file: each saved version answers, and the recorded run keeps its hash", function()
    write("agents/helper.lua", 'return agent{name = "helper", run = function(self, input) return "H1 " .. input end}\n')
    local p = start({ "run", "--watch", "--deadline", "0", "--json", "agents/helper.lua", "hello" })
    assert.is_true(wait_for(function() return #json_lines(p.out()) == 1 end), p.err())
    local h2 = 'return agent{name = "helper", run = function(self, input) return "H2 " .. input end}\n'
    write("agents/helper.lua", h2)
    assert.is_true(wait_for(function() return #json_lines(p.out()) == 2 end), p.err())
    write("agents/helper.lua", 'return workflow{name = "w", run = function() end}\n')
    assert.is_true(wait_for(function() return p.err():find("[reload] agents/helper.lua:1: returns a workflow{}, not an agent{}", 1, true) ~= nil end), p.err())
    p.signal("sigterm")
    local res = p.wait()
    assert.equals(0, res.code, H.show(res))
    local reps = json_lines(res.stdout)
    assert.same({ "H1 hello", "H2 hello" }, { reps[1].output, reps[2].output })
    assert.equals(sha(h2), reps[2].version)
    assert.equals(sha(h2), show(reps[2].run_id).version)
  end)

  it("says what is wrong with the command", function()
    local r = moonhive({ "run", "--watch", "missing.lua" })
    assert.equals(1, r.code, H.show(r))
    assert.matches("cannot open missing.lua", r.stderr, 1, true)
    write("notes.txt", "x")
    r = moonhive({ "run", "--watch", "notes.txt" })
    assert.equals(1, r.code, H.show(r))
    assert.matches("must end in .lua", r.stderr, 1, true)
  end)
end)
