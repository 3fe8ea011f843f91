-- Who executes a workflow run: the queue (`moonhive run FILE --enqueue`
-- makes a pending run; `runs resume` claims pending runs, each for one
-- process only), the lease (a second process resuming a run another one
-- executes is refused; a killed holder's lease expires and the run can be
-- taken over), and the attach path (only `runs resume` may bind a script
-- to an existing run).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"
local uv = require "luv"

-- One model call with a prompt unique to the run's tag, so the mock
-- server's request log says how often each run executed it.
local ONCE = [[
return workflow{name = "once", run = function(wf, input)
  return wf:call("worker", "job " .. input.tag .. " [delay:" .. (input.ms or 0) .. "] [reply:done " .. input.tag .. "]")
end}]]

local GATED = [[
return workflow{name = "gated", run = function(wf, input)
  wf:wait_signal("go")
  return wf:call("worker", "job " .. input.tag .. " [delay:" .. input.ms .. "] [reply:done " .. input.tag .. "]")
end}]]

describe("workflow runs", function()
  local P, project, llm_srv -- H.mock_project

  local function env(extra) return P.env(extra) end
  local function moonhive(args, extra) return P.moonhive(args, extra) end

  local function show(id) return cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" }))) end

  -- How many requests the mock model got for "job TAG".
  local function jobs(tag)
    local n = 0
    for _, r in ipairs(H.mock_requests(llm_srv)) do
      for _, m in ipairs(type(r.body) == "table" and r.body.messages or {}) do
        if m.role == "user" and type(m.content) == "string" and m.content:find("job " .. tag .. " ", 1, true) then
          n = n + 1
        end
      end
    end
    return n
  end

  local function start(args, extra) return H.start(args, { cwd = project, env = env(extra) }) end

  local function run_id_of(text) return text:match("run (%x+%-%x+) started") end

  -- Starts the workflow that waits for signal "go" and then calls the model
  -- for "job TAG" (taking ms); returns the process and the run's id once it waits.
  local function start_waiting(tag, ms, extra)
    local p = start({ "run", "gated.lua", "--input", cjson.encode({ tag = tag, ms = ms }) }, extra)
    local id
    H.wait_until(function()
      id = id or run_id_of(p.stderr())
      return id ~= nil and show(id).status == "waiting"
    end, 10000)
    assert.truthy(id, p.stderr())
    return p, id
  end

  local function enqueue(tag, ms)
    local id = H.ok(moonhive({ "run", "once.lua", "--enqueue", "--input", cjson.encode({ tag = tag, ms = ms }) }))
    return (id:gsub("%s+$", ""))
  end

  lazy_setup(function()
    P = H.mock_project('return agent{name = "worker", system = "You work."}')
    project, llm_srv = P.dir, P.llm
    H.write(project .. "/once.lua", ONCE)
    H.write(project .. "/gated.lua", GATED)
  end)
  lazy_teardown(function()
    P.stop()
    H.cleanup()
  end)

  it("queues a run as pending; runs resume claims it, oldest first, and runs it once", function()
    local a = enqueue("qa")
    assert.matches("^%x+%-%x+$", a)
    assert.equals("pending", show(a).status)
    assert.equals(0, jobs("qa"))
    local listed = cjson.decode(H.ok(moonhive({ "runs", "--json", "--limit", "1" })))
    assert.same({ a, "pending" }, { listed[1].id, listed[1].status })

    -- one pending run by id
    local r = moonhive({ "runs", "resume", a, "--json" })
    assert.equals(0, r.code, H.show(r))
    assert.same({ "succeeded", "done qa" }, { cjson.decode(r.stdout).status, cjson.decode(r.stdout).output })
    assert.equals(1, jobs("qa"))

    -- every pending run, in the order they were queued
    local b, c = enqueue("qb"), enqueue("qc")
    local j = cjson.decode(H.ok(moonhive({ "run", "--json", "once.lua", "--enqueue", "--input", '{"tag": "qd"}' })))
    assert.same({ "once", "pending" }, { j.workflow, j.status })
    r = moonhive({ "runs", "resume", "--json" })
    assert.equals(0, r.code, H.show(r))
    local reports = cjson.decode(r.stdout)
    assert.same({ b, c, j.run_id }, { reports[1].run_id, reports[2].run_id, reports[3].run_id })
    for _, tag in ipairs({ "qa", "qb", "qc", "qd" }) do assert.equals(1, jobs(tag), tag) end
    assert.matches("no unfinished", moonhive({ "runs", "resume" }).stderr)

    -- a cancelled pending run never runs
    local d = enqueue("qe")
    H.ok(moonhive({ "runs", "cancel", d }))
    assert.matches("nothing to resume", H.fails(moonhive({ "runs", "resume", d })))
    assert.equals(0, jobs("qe"))
  end)

  it("claims each pending run for one process only when two resume at once", function()
    local ids = {}
    for i = 1, 6 do ids[i] = enqueue("cc" .. i, 100) end
    local a, b = start({ "runs", "resume", "--json" }), start({ "runs", "resume", "--json" })
    local ra, rb = a.wait(), b.wait()
    assert.equals(0, ra.code, H.show(ra))
    assert.equals(0, rb.code, H.show(rb))
    local seen = {}
    for _, r in ipairs(cjson.decode(ra.stdout)) do seen[#seen + 1] = r.run_id end
    for _, r in ipairs(cjson.decode(rb.stdout)) do seen[#seen + 1] = r.run_id end
    table.sort(seen)
    assert.same(ids, seen) -- every run once, none twice
    for i = 1, 6 do assert.equals(1, jobs("cc" .. i), "cc" .. i) end
  end)

  it("refuses a second executor while the first renews its lease; takes over a frozen one after it expires", function()
    local lease = { MOONHIVE_LEASE_MS = 1500 }
    local holder, id = start_waiting("fz", 0, lease)
    -- longer than one lease: the holder has renewed it
    local t0 = uv.now()
    H.wait_until(function() return uv.now() - t0 > 2000 end, 5000)
    local refused = H.fails(moonhive({ "runs", "resume", id }, lease))
    assert.matches("run " .. H.lit(id) .. " is being executed by pid " .. holder.pid .. " on host [^ ]+ until %d%d%d%d%-", refused)

    -- frozen, it stops renewing: once its lease has expired another process takes the run over
    holder.kill("sigstop")
    H.wait_until(function() return (show(id).lease_until or 0) < uv.gettimeofday() end, 10000)
    H.ok(moonhive({ "runs", "signal", id, "go" }))
    local r = moonhive({ "runs", "resume", id, "--json" }, lease)
    assert.equals(0, r.code, H.show(r))
    assert.equals("done fz", cjson.decode(r.stdout).output)

    -- thawed, the old holder finds its lease gone and stops without writing
    holder.kill("sigcont")
    local old = holder.wait()
    assert.equals(1, old.code, H.show(old))
    assert.matches("lost its lease", old.stderr, 1, true)
    assert.equals(1, jobs("fz"))
    assert.equals("succeeded", show(id).status)
  end)

  it("after SIGKILL, exactly one of two concurrent resumes executes the run", function()
    local holder, id = start_waiting("kk", 600)
    holder.kill("sigkill")
    holder.wait() -- reaped: its pid is gone, so its lease can be taken at once
    H.ok(moonhive({ "runs", "signal", id, "go" }))
    local a, b = start({ "runs", "resume", id, "--json" }), start({ "runs", "resume", id, "--json" })
    local ra, rb = a.wait(), b.wait()
    local won, lost = ra, rb
    if rb.code == 0 then won, lost = rb, ra end
    assert.equals(0, won.code, H.show(won))
    assert.equals("done kk", cjson.decode(won.stdout).output)
    assert.equals(1, lost.code, H.show(lost))
    assert.is_truthy(lost.stderr:find("is being executed by pid", 1, true) or lost.stderr:find("nothing to resume", 1, true),
                     lost.stderr)
    assert.equals(1, jobs("kk"))
  end)

  it("lets no script but the resume path take over a run: attach and unfinished need the resume's token", function()
    local victim = enqueue("victim")
    local probe = ([[
local out = {}
local a, ea = workflows.attach{id = %q}
local u, eu = workflows.unfinished{id = %q}
local ok, er = pcall(require("workflow").resume_main, true, %q)
local f, ef = workflows.attach{id = %q, token = "0123456789abcdef0123456789abcdef"}
return tostring(a) .. " " .. ea .. "|" .. tostring(u) .. " " .. eu .. "|" .. tostring(ok) .. " " .. tostring(er) .. "|" .. tostring(f) .. " " .. ef
]]):format(victim, victim, victim, victim)
    local text = H.ok(moonhive({ "eval", probe }))
    local parts = {}
    for p in text:gmatch("[^|]+") do parts[#parts + 1] = p end
    assert.equals(4, #parts, text)
    for _, p in ipairs(parts) do
      assert.matches("only `moonhive runs resume` may take over an existing run", p, 1, true)
    end
    assert.matches("^nil ", parts[1])
    assert.matches("^false ", parts[3])

    -- workflow code being resumed shares the sandbox with the resume path, not its token
    H.write(project .. "/sneaky.lua", [[
return workflow{name = "sneaky", run = function(wf, input)
  wf:wait_signal("go")
  local r, e = workflows.attach{id = input.victim}
  local u, eu = workflows.unfinished{}
  return {attached = r ~= nil, error = e, listed = u ~= nil, error2 = eu}
end}]])
    local p = start({ "run", "sneaky.lua", "--input", cjson.encode({ victim = victim }) })
    local id
    H.wait_until(function()
      id = id or run_id_of(p.stderr())
      return id ~= nil and show(id).status == "waiting"
    end, 10000)
    p.kill("sigkill")
    p.wait()
    H.ok(moonhive({ "runs", "signal", id, "go" }))
    local r = moonhive({ "runs", "resume", id, "--json" })
    assert.equals(0, r.code, H.show(r))
    local out = cjson.decode(r.stdout).output
    assert.same({ false, false }, { out.attached, out.listed })
    assert.matches("only `moonhive runs resume` may take over", out.error, 1, true)
    assert.matches("only `moonhive runs resume` may take over", out.error2, 1, true)

    -- the victim is untouched: still pending, unleased, nothing journaled
    local v = show(victim)
    assert.same({ "pending", nil }, { v.status, v.lease_owner })
    assert.is_nil(v.steps)
    assert.equals(0, jobs("victim"))
  end)
end)
