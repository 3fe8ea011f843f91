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

describe("workflow runs", function()
  local project, data, llm_srv

  local function env(extra)
    local e = { MOONHIVE_DATA = data, MOONHIVE_MODEL = "openai/x", OPENAI_API_KEY = "sk-test-wfq",
                OPENAI_BASE_URL = llm_srv.url("/v1"), ANTHROPIC_API_KEY = false }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  local function moonhive(args, extra) return H.moonhive(args, { cwd = project, env = env(extra) }) end

  local function show(id) return cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" }))) end

  -- How many requests the mock model got for "job TAG".
  local function jobs(tag)
    local body = H.ok(moonhive({ "eval", ("return assert(http.get(%q)).body"):format(llm_srv.url("/_requests")) }))
    local n = 0
    for _, r in ipairs(cjson.decode(body)) do
      for _, m in ipairs(type(r.body) == "table" and r.body.messages or {}) do
        if m.role == "user" and type(m.content) == "string" and m.content:find("job " .. tag .. " ", 1, true) then
          n = n + 1
        end
      end
    end
    return n
  end

  local function enqueue(tag, ms)
    local id = H.ok(moonhive({ "run", "once.lua", "--enqueue", "--input", cjson.encode({ tag = tag, ms = ms }) }))
    return (id:gsub("%s+$", ""))
  end

  lazy_setup(function()
    project = H.tmpdir()
    data = project .. "/.moonhive"
    uv.fs_mkdir(project .. "/agents", 448)
    H.write(project .. "/agents/worker.lua", 'return agent{name = "worker", system = "You work."}')
    H.write(project .. "/once.lua", ONCE)
    llm_srv = H.start_mockllm()
  end)
  lazy_teardown(function()
    llm_srv.stop()
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
end)
