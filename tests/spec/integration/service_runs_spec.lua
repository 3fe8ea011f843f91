-- service_runs_spec.lua — `moonhive serve` running the project's agents and
-- workflows over real HTTP (curl), against the mock LLM server: listing
-- them (with load errors and the shipped ones), starting runs (202, and
-- ?wait=true), bad bodies, roles, cancelling, answering a waiting step,
-- --watch reloading, the session key, and SIGTERM during a workflow run:
-- the step in flight is journaled, the process exits 0, and the next start
-- resumes the run without executing journaled steps again.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local WORKER = [[return agent{ name = "worker", description = "does the work", system = "You work." }]]

local THREE = [[
return workflow{ name = "three", description = "three steps", run = function(wf, input)
  local a = wf:call("worker", "[reply:one]")
  local b = wf:call("worker", "[delay:1500][reply:two]")
  local c = wf:call("worker", "[reply:three]")
  return { a, b, c }
end }
]]

local APPROVAL = [[
return workflow{ name = "approval", run = function(wf, input)
  local draft = wf:call("worker", "[reply:draft about " .. input.topic .. "]")
  local answer = wf:wait_signal("approve")
  return { draft = draft, answer = answer }
end }
]]

-- A project with the worker agent, the workflows above and the mock server.
local function project()
  local p = H.mock_project(WORKER)
  local uv = require "luv"
  uv.fs_mkdir(p.dir .. "/workflows", 448)
  H.write(p.dir .. "/workflows/three.lua", THREE)
  H.write(p.dir .. "/workflows/approval.lua", APPROVAL)
  H.write(p.dir .. "/agents/broken.lua", "return agent{ name = 'broken', \n  system = }\n")
  return p
end

-- curl with the key; returns status, decoded JSON body (or the text), raw body.
local function call(srv, key, method, path, body)
  local args = { "-i", "-X", method, "-H", "Authorization: Bearer " .. key, srv.url(path) }
  if body then
    table.insert(args, #args, "-H")
    table.insert(args, #args, "Content-Type: application/json")
    table.insert(args, #args, "--data-binary")
    table.insert(args, #args, body)
  end
  local r = H.curl(args)
  assert(r.code == 0, "curl failed: " .. r.stderr)
  local head, text = r.stdout:match("^(.-)\r\n\r\n(.*)$")
  local ok, v = pcall(cjson.decode, text)
  return tonumber(head:match("^HTTP/1%.1 (%d+)")), ok and v or text, text
end

local function run_status(srv, key, id)
  local _, run = call(srv, key, "GET", "/v1/runs/" .. id)
  return run.status, run
end

describe("moonhive serve: agents and workflows", function()
  local p, srv
  before_each(function() p = project() end)
  after_each(function()
    if srv and not srv.exited then srv.stop() end
    srv = nil
    p.stop()
  end)

  it("lists the project's and the shipped definitions, with load errors, and shows one with its source", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    assert.truthy(srv.key, "serve printed no session key: " .. srv.stdout())
    local status, body = call(srv, srv.key, "GET", "/v1/agents")
    assert.equal(200, status)
    local by = {}
    for _, a in ipairs(body.agents) do by[a.name] = a end
    assert.equal("does the work", by.worker.description)
    assert.equal("agents/worker.lua", by.worker.file)
    assert.is_false(by.worker.shipped)
    assert.equal(64, #by.worker.version)
    assert.matches("agents/broken.lua:2: unexpected symbol", by.broken.error, 1, true)
    assert.is_nil(by.broken.version)
    assert.is_true(by.coder.shipped) -- a ready-made role
    local _, wfs = call(srv, srv.key, "GET", "/v1/workflows")
    local names = {}
    for _, w in ipairs(wfs.workflows) do names[w.name] = w end
    assert.truthy(names.three and names.approval and names.development)
    local s2, one = call(srv, srv.key, "GET", "/v1/agents/worker")
    assert.equal(200, s2)
    assert.equal(WORKER, one.source)
    assert.equal(404, (call(srv, srv.key, "GET", "/v1/agents/nobody")))
  end)

  it("starts agent runs: ?wait=true answers the finished run, else 202 and the run follows", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local status, rep = call(srv, srv.key, "POST", "/v1/agents/worker/runs?wait=true", '{"input":"[reply:hello there]"}')
    assert.equal(200, status)
    assert.equal("succeeded", rep.status)
    assert.equal("hello there", rep.output)
    assert.equal("succeeded", (run_status(srv, srv.key, rep.run_id)))
    local s2, started = call(srv, srv.key, "POST", "/v1/agents/worker/runs", '{"input":{"task":"[reply:later]"}}')
    assert.equal(202, s2)
    assert.equal("/v1/runs/" .. started.run_id, started.links.run)
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, started.run_id) == "succeeded" end, 10000))
    local _, run = run_status(srv, srv.key, started.run_id)
    assert.equal("later", run.output)
    assert.equal(2, #H.mock_requests(p.llm))
  end)

  it("refuses bad bodies, unknown and broken definitions, and callers without the operator role", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local cases = {
      { "/v1/agents/worker/runs", "not json", 400, "JSON object" },
      { "/v1/agents/worker/runs", '{"task":"x"}', 400, 'needs an "input"' },
      { "/v1/agents/worker/runs", "", 400, "JSON object" },
      { "/v1/agents/nobody/runs", '{"input":"x"}', 404, "no agent named 'nobody'" },
      { "/v1/workflows/nothing/runs", '{"input":1}', 404, "no workflow named 'nothing'" },
      { "/v1/agents/broken/runs", '{"input":"x"}', 409, "has no version that loads" },
    }
    for _, c in ipairs(cases) do
      local status, body = call(srv, srv.key, "POST", c[1], c[2])
      assert.equal(c[3], status, c[1] .. " " .. c[2])
      assert.matches(c[4], body.error.message, 1, true)
    end
    local viewer = H.ok(p.moonhive({ "keys", "create", "--role", "viewer" })):gsub("%s+$", "")
    local status, body = call(srv, viewer, "POST", "/v1/agents/worker/runs", '{"input":"x"}')
    assert.equal(403, status)
    assert.matches("needs the operator role", body.error.message, 1, true)
    assert.equal(200, (call(srv, viewer, "GET", "/v1/agents")))
    assert.equal(0, #H.mock_requests(p.llm)) -- nothing reached the model
  end)

  it("a run that breaks its sandbox's memory limit fails alone; the next run of that sandbox succeeds", function()
    H.write(p.dir .. "/agents/hog.lua", [[return agent{ name = "hog", run = function(self, input)
      if input == "big" then local t = {} for i = 1, 5e6 do t[i] = i end end
      return "fine"
    end }]])
    srv = H.start_service(p.env({ MOONHIVE_MEMORY_LIMIT = "16M" }), { cwd = p.dir })
    local _, big = call(srv, srv.key, "POST", "/v1/agents/hog/runs?wait=true", '{"input":"big"}')
    assert.equal("failed", big.status)
    assert.matches("memory limit of 16 MiB exceeded", big.error, 1, true)
    assert.equal("failed", (run_status(srv, srv.key, big.run_id)))
    local _, small = call(srv, srv.key, "POST", "/v1/agents/hog/runs?wait=true", '{"input":"small"}')
    assert.equal("fine", small.output)
  end)

  it("cancels a running agent run", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local _, started = call(srv, srv.key, "POST", "/v1/agents/worker/runs", '{"input":"[delay:20000][reply:late]"}')
    H.wait_until(function() return #H.mock_requests(p.llm) == 1 end, 5000)
    local status = call(srv, srv.key, "POST", "/v1/runs/" .. started.run_id .. "/cancel")
    assert.equal(200, status)
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, started.run_id) == "cancelled" end, 5000))
    local _, run = run_status(srv, srv.key, started.run_id)
    assert.is_nil(run.output)
    assert.equal(0, srv.stop()) -- nothing is left running: no grace period to wait out
  end)

  it("answers a waiting workflow step with a signal", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local s, started = call(srv, srv.key, "POST", "/v1/workflows/approval/runs", '{"input":{"topic":"bees"}}')
    assert.equal(202, s)
    local id = started.run_id
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, id) == "waiting" end, 10000))
    assert.equal(202, (call(srv, srv.key, "POST", "/v1/runs/" .. id .. "/signals/approve", '{"ok":true}')))
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, id) == "succeeded" end, 10000))
    local _, run = run_status(srv, srv.key, id)
    assert.same({ draft = "draft about bees", answer = { ok = true } }, run.output)
  end)

  it("on SIGTERM lets the step in flight be journaled, exits 0, and resumes the run at the next start", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local _, started = call(srv, srv.key, "POST", "/v1/workflows/three/runs", '{"input":"go"}')
    local id = started.run_id
    assert.is_true(H.wait_until(function() return #H.mock_requests(p.llm) == 2 end, 10000)) -- step 2 in flight
    assert.equal(0, srv.stop())
    assert.matches('"event":"shutdown"', srv.stderr(), 1, true)
    local r = H.ok(p.moonhive({ "runs", "show", id, "--json" }))
    local run = cjson.decode(r)
    assert.equal("running", run.status) -- unfinished, for the next start
    local steps = {}
    for _, st in ipairs(run.steps or {}) do steps[st.step] = st.status end
    assert.same({ ["1"] = "ok", ["2"] = "ok" }, steps) -- step 2 reached its journal before the exit
    srv = H.start_service(p.env(), { cwd = p.dir })
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, id) == "succeeded" end, 10000))
    local _, done = run_status(srv, srv.key, id)
    assert.same({ "one", "two", "three" }, done.output)
    assert.equal(3, #H.mock_requests(p.llm)) -- steps 1 and 2 were not executed again
    assert.matches('"event":"resumed","runs":1', srv.stderr(), 1, true)
  end)

  it("while it runs, starts queued workflow runs and takes over one whose process was killed", function()
    local env = p.env({ MOONHIVE_LEASE_MS = "1000" })
    srv = H.start_service(env, { cwd = p.dir })
    -- queued by another process after the start: the service's poll claims it
    local queued = H.ok(H.moonhive({ "run", "workflows/three.lua", "--enqueue", "--input", '"q"' },
                                   { cwd = p.dir, env = env })):match("%x+%-%x+")
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, queued) == "succeeded" end, 15000))
    assert.equal(3, #H.mock_requests(p.llm))
    -- a run whose process is killed during its second step: once its lease
    -- expires the service takes it over and runs the third step only
    local proc = H.spawn({ "run", "workflows/three.lua", "--input", '"k"' }, { cwd = p.dir, env = env })
    assert.is_true(H.wait_until(function() return #H.mock_requests(p.llm) == 5 end, 10000))
    local _, list = call(srv, srv.key, "GET", "/v1/runs")
    local killed = list.runs[1].id
    assert.are_not.equal(queued, killed)
    proc.kill("sigkill")
    proc.wait()
    assert.is_true(H.wait_until(function() return run_status(srv, srv.key, killed) == "succeeded" end, 15000))
    local _, run = run_status(srv, srv.key, killed)
    assert.same({ "one", "two", "three" }, run.output)
    -- step 2 was in flight when the process died, so it runs again; step 1 does not
    assert.equal(7, #H.mock_requests(p.llm))
    assert.equal(0, srv.stop())
  end)

  it("logs a poll that keeps failing the same way once, not every second", function()
    srv = H.start_service(p.env({ MOONHIVE_STORE = "nope" }), { cwd = p.dir })
    H.wait_until(function() return false end, 3500) -- the start's resume and three polls
    local failures = 0
    for _ in srv.stderr():gmatch("resuming unfinished workflow runs failed: [^\n]*no such store") do
      failures = failures + 1
    end
    assert.equal(1, failures, srv.stderr())
    assert.equal(0, srv.stop())
  end)

  it("with --watch, new runs use an agent's new version", function()
    H.write(p.dir .. "/agents/greeter.lua", [[return agent{ name = "greeter", run = function() return "v1" end }]])
    srv = H.start_service(p.env(), { cwd = p.dir, args = { "--watch" } })
    local _, a = call(srv, srv.key, "POST", "/v1/agents/greeter/runs?wait=true", '{"input":"hi"}')
    assert.equal("v1", a.output)
    local _, before = call(srv, srv.key, "GET", "/v1/agents/greeter")
    H.write(p.dir .. "/agents/greeter.lua", [[return agent{ name = "greeter", run = function() return "v2" end }]])
    assert.is_true(H.wait_until(function()
      local _, now = call(srv, srv.key, "GET", "/v1/agents/greeter")
      return now.version ~= before.version
    end, 10000))
    local _, b = call(srv, srv.key, "POST", "/v1/agents/greeter/runs?wait=true", '{"input":"hi"}')
    assert.equal("v2", b.output)
    assert.are_not.equal(a.version, b.version)
    -- an edit that does not load keeps v2, and says why in the JSON log
    H.write(p.dir .. "/agents/greeter.lua", "return agent{ name = \"greeter\",\n  run = }\n")
    assert.is_true(H.wait_until(function() return srv.stderr():find("keeping version", 1, true) ~= nil end, 10000))
    local _, c = call(srv, srv.key, "POST", "/v1/agents/greeter/runs?wait=true", '{"input":"hi"}')
    assert.equal("v2", c.output)
    assert.equal(0, srv.stop())
    local reloads = {}
    for line in srv.stderr():gmatch("[^\n]+") do
      local ok, v = pcall(cjson.decode, line)
      assert(ok and type(v) == "table", "not a JSON line: " .. line)
      if v.event == "reload" and v.message:find("agents/greeter.lua", 1, true) == 1 then reloads[#reloads + 1] = v end
    end
    assert.equal(2, #reloads, srv.stderr())
    assert.equal("info", reloads[1].level)
    assert.matches("^agents/greeter.lua: version %x+ loaded %(was %x+%)$", reloads[1].message)
    assert.equal("warn", reloads[2].level)
    assert.matches('agents/greeter.lua:2: unexpected symbol near \'}\' (keeping version ', reloads[2].message, 1, true)
  end)

  it("prints a session key on stdout only; it is admin for this process alone", function()
    srv = H.start_service(p.env(), { cwd = p.dir })
    local key = srv.key
    assert.equal(200, (call(srv, key, "GET", "/v1/audit")))
    call(srv, key, "POST", "/v1/agents/worker/runs?wait=true", '{"input":"[reply:x]"}')
    assert.equal(0, srv.stop())
    assert.is_nil(srv.stderr():find(key:sub(12), 1, true))
    srv = H.start_service(p.env(), { cwd = p.dir })
    local status, body = call(srv, key, "GET", "/v1/runs")
    assert.equal(401, status)
    assert.matches("unknown session key", body.error.message, 1, true)
  end)
end)
