-- service_metrics_spec.lua — what `moonhive serve` tells about the work of
-- every process sharing its store: GET /metrics after real agent and
-- workflow runs (`moonhive run`, against the mock LLM server and the mock
-- model) counts runs by kind and status, active runs, model calls, errors,
-- tokens and cost by provider and model, and tool calls, exactly as the runs
-- recorded them; label values are escaped and their number bounded. And
-- GET /v1/openapi.json answers anyone with the API's OpenAPI document.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local WORKER = [[
return agent{
  name = "worker", system = "You work.", max_iterations = 4,
  tools = {
    tool{name = "add", description = "adds two numbers",
         params = {type = "object", properties = {a = {type = "number"}, b = {type = "number"}}, required = {"a", "b"}},
         run = function(args) return args.a + args.b end},
    tool{name = "boom", description = "fails", run = function() error("the tool broke", 0) end},
  },
}]]

local FLOW = [[
return workflow{
  name = "flow",
  run = function(wf, input)
    local a = wf:call("worker", "step one [tool:add:{\"a\":4,\"b\":5}]")
    return {a, wf:tool("calculator", {expression = "6*7"})}
  end,
}]]

-- Label text ({a="x",b="y\"z"}) as a table, undoing the exposition escapes.
local function parse_labels(text)
  local labels, i = {}, 1
  while i <= #text do
    local name, j = text:match("^([%a_][%w_]*)=\"()", i)
    assert(name, "bad labels: " .. text)
    local value = {}
    i = j
    while true do
      local c = text:sub(i, i)
      if c == "\\" then
        local n = text:sub(i + 1, i + 1)
        value[#value + 1] = n == "n" and "\n" or n
        i = i + 2
      elseif c == '"' then i = i + 1 break
      else
        assert(c ~= "", "unterminated label value: " .. text)
        value[#value + 1] = c
        i = i + 1
      end
    end
    labels[name] = table.concat(value)
    if text:sub(i, i) == "," then i = i + 1 end
  end
  return labels
end

-- The exposition text as {family = {help=, type=, samples = {{labels=, value=}}}},
-- checking its shape on the way: HELP and TYPE once per family, before its
-- samples; every sample in a declared family; no series twice.
local function parse(text)
  local fams, seen, current = {}, {}, nil
  for line in text:gmatch("[^\n]+") do
    local kind, name, rest = line:match("^# (%u+) ([%w_]+) (.*)$")
    if kind then
      fams[name] = fams[name] or { samples = {} }
      assert.is_nil(fams[name][kind:lower()], kind .. " twice for " .. name)
      fams[name][kind:lower()] = rest
      current = name
    else
      local metric, labels, value = line:match("^([%w_]+){(.*)} (%S+)$")
      if not metric then metric, value = line:match("^([%w_]+) (%S+)$") end
      assert(metric, "not a sample line: " .. line)
      assert(tonumber(value), "not a number: " .. line)
      local fam = metric
      if not fams[fam] then fam = metric:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "") end
      assert(fam == current and fams[fam].type, "a sample outside its family's HELP/TYPE: " .. line)
      assert.is_nil(seen[metric .. "{" .. (labels or "")], "a series twice: " .. line)
      seen[metric .. "{" .. (labels or "")] = true
      table.insert(fams[fam].samples, { name = metric, labels = parse_labels(labels or ""), value = tonumber(value) })
    end
  end
  return fams
end

-- The value of the sample of family `name` with exactly these labels, or nil.
local function value(fams, name, labels)
  for _, s in ipairs(fams[name] and fams[name].samples or {}) do
    local same = true
    for k, v in pairs(labels or {}) do if s.labels[k] ~= v then same = false end end
    for k in pairs(s.labels) do if (labels or {})[k] == nil then same = false end end
    if same then return s.value end
  end
  return nil
end

describe("GET /metrics", function()
  local P, srv, key

  local function scrape()
    local r = H.curl({ "-H", "Authorization: Bearer " .. key, srv.url("/metrics") })
    assert.equal(0, r.code, r.stderr)
    return parse(r.stdout)
  end

  local function run(args, extra) return P.moonhive(args, extra) end

  lazy_setup(function()
    P = H.mock_project(WORKER)
    H.write(P.dir .. "/flow.lua", FLOW)
    key = H.ok(P.moonhive({ "keys", "create", "--role", "viewer" })):gsub("%s+$", "")
    srv = H.start_service(P.env())
  end)
  lazy_teardown(function()
    if srv then assert.equal(0, srv.stop()) end
    P.stop()
    H.cleanup()
  end)

  it("counts the runs, model calls, tokens and tool calls the recorded runs hold, by provider and model", function()
    local res = run({ "run", "agents/worker.lua", 'add [tool:add:{"a":2,"b":3}] [tool:add:{"a":1,"b":1}]' })
    assert.equal(0, res.code, H.show(res))
    res = run({ "run", "agents/worker.lua", "go [tool:boom:{}] [tool:nope:{}]" }, { MOONHIVE_MODEL = "mock/test" })
    assert.equal(0, res.code, H.show(res))
    res = run({ "run", "agents/worker.lua", "refused [status:400]" })
    assert.are_not.equal(0, res.code, H.show(res))
    res = run({ "run", "flow.lua" })
    assert.equal(0, res.code, H.show(res))

    -- what the records say: the model calls in each run's trace (the
    -- workflow's are under its steps), by "provider/model"
    local usage = {}
    local function walk(node)
      if node.type == "model" and not node.error then
        local u = usage[node.model] or { calls = 0, input = 0, output = 0 }
        usage[node.model] = u
        u.calls, u.input, u.output = u.calls + 1, u.input + node.tokens_in, u.output + node.tokens_out
      end
      for _, c in ipairs(node.children or {}) do walk(c) end
    end
    for _, r in ipairs(cjson.decode(H.ok(P.moonhive({ "runs", "--json", "--limit", "100" })))) do
      walk(cjson.decode(H.ok(P.moonhive({ "trace", r.id, "--json" }))))
    end

    local m = scrape()
    assert.equal("gauge", m.moonhive_runs.type)
    assert.equal(2, value(m, "moonhive_runs", { kind = "agent", status = "succeeded" })) -- a step is no run of its own
    assert.equal(1, value(m, "moonhive_runs", { kind = "agent", status = "failed" }))
    assert.equal(1, value(m, "moonhive_runs", { kind = "workflow", status = "succeeded" }))
    assert.equal(0, value(m, "moonhive_runs", { kind = "agent", status = "running" }))
    assert.equal(0, value(m, "moonhive_active_runs"))

    -- model calls and tokens match the recorded events, per provider and model
    assert.same({ "mock/test", "openai/x" }, (function()
      local names = {}
      for name in pairs(usage) do names[#names + 1] = name end
      table.sort(names)
      return names
    end)())
    for name, u in pairs(usage) do
      local provider, model = name:match("^(.-)/(.*)$")
      local l = { provider = provider, model = model }
      assert.is_true(u.input > 0 and u.output > 0)
      assert.equal(u.calls, value(m, "moonhive_model_calls_total", l), name)
      assert.equal(u.input, value(m, "moonhive_model_tokens_total", { provider = provider, model = model, direction = "input" }))
      assert.equal(u.output, value(m, "moonhive_model_tokens_total", { provider = provider, model = model, direction = "output" }))
      assert.equal(0, value(m, "moonhive_model_cost_usd_total", l))
    end
    assert.equal(4, usage["openai/x"].calls) -- two for "add", two for the workflow's step
    assert.equal(2, usage["mock/test"].calls)
    assert.equal(1, value(m, "moonhive_model_errors_total", { provider = "openai", model = "x" }))
    assert.equal(0, value(m, "moonhive_model_errors_total", { provider = "mock", model = "test" }))
    assert.equal("counter", m.moonhive_model_tokens_total.type)

    -- tool calls by tool and outcome: agents' and the workflow's wf:tool step
    assert.equal(3, value(m, "moonhive_tool_calls_total", { tool = "add", ok = "true" }))
    assert.equal(1, value(m, "moonhive_tool_calls_total", { tool = "boom", ok = "false" }))
    assert.equal(1, value(m, "moonhive_tool_calls_total", { tool = "nope", ok = "false" }))
    assert.equal(1, value(m, "moonhive_tool_calls_total", { tool = "calculator", ok = "true" }))
    assert.equal(4, #m.moonhive_tool_calls_total.samples)
  end)

  it("shows a run as active while it runs, then by its final status", function()
    local before = scrape()
    local succeeded = value(before, "moonhive_runs", { kind = "agent", status = "succeeded" })
    -- relative to what the store held before: a run another test left running counts too
    local active = value(before, "moonhive_active_runs") or 0
    local running = value(before, "moonhive_runs", { kind = "agent", status = "running" }) or 0
    H.write(P.dir .. "/slow.lua", [[
      runs.start{agent = "slow", input = "x"}
      sleep(6000)
      runs.finish{status = "succeeded", output = "done"}
    ]])
    local p = H.spawn({ "run", "slow.lua" }, { cwd = P.dir, env = P.env() })
    -- scrape every 100 ms (H.wait_until would sleep in the loop until the
    -- silent child exits) until the run shows or ends
    local seen
    for _ = 1, 150 do
      seen = scrape()
      H.flush()
      if value(seen, "moonhive_active_runs") == active + 1 or p.exited then break end
      require("luv").sleep(100)
    end
    assert(not p.exited or value(seen, "moonhive_active_runs") == active + 1,
           "the slow run ended before a scrape saw it: " .. p.stderr())
    assert.equal(active + 1, value(seen, "moonhive_active_runs"))
    assert.equal(running + 1, value(seen, "moonhive_runs", { kind = "agent", status = "running" }))
    assert.equal(0, p.wait().code)
    local after = scrape()
    assert.equal(active, value(after, "moonhive_active_runs"))
    assert.equal(succeeded + 1, value(after, "moonhive_runs", { kind = "agent", status = "succeeded" }))
  end)

  it("no longer counts an agent run whose process was killed once a server starts", function()
    H.write(P.dir .. "/stuck.lua", [[
      local r = runs.start{agent = "stuck", input = "x"}
      print(r.id)
      sleep(60000)
    ]])
    local p = H.spawn({ "run", "stuck.lua" }, { cwd = P.dir, env = P.env() })
    local id
    for _ = 1, 150 do
      H.flush()
      id = p.stdout():match("(%x+%-%x+)")
      if id or p.exited then break end
      require("luv").sleep(100)
    end
    assert(id, "the run did not start: " .. p.stderr())
    local before = scrape()
    local active = value(before, "moonhive_active_runs")
    p.kill("sigkill")
    p.wait()
    -- the store still says running: nothing in the killed process could say otherwise
    local shown = cjson.decode(H.curl({ "-H", "Authorization: Bearer " .. key, srv.url("/v1/runs/" .. id) }).stdout)
    assert.equal("running", shown.status)
    -- a second server on the same store starts: it fails the run, naming the process
    local other = H.start_service(P.env())
    assert.equal(0, other.stop())
    shown = cjson.decode(H.curl({ "-H", "Authorization: Bearer " .. key, srv.url("/v1/runs/" .. id) }).stdout)
    assert.equal("failed", shown.status)
    assert.matches("interrupted: the process running it (pid " .. p.pid .. " on host", shown.error, 1, true)
    assert.equal(active - 1, value(scrape(), "moonhive_active_runs"))
  end)
end)

describe("GET /metrics label values", function()
  it("are escaped, cleaned of control characters and bounded in number", function()
    local dir = H.tmpdir()
    local env = { MOONHIVE_DATA = dir .. "/.moonhive" }
    local key = H.ok(H.moonhive({ "keys", "create", "--role", "viewer" }, { env = env })):gsub("%s+$", "")
    -- a script may record any tool name: quotes, backslashes, newlines, and many names
    H.write(dir .. "/names.lua", [[
      runs.start{agent = "namer", input = "x"}
      local function result(name) runs.event{kind = "tool_result", agent = "namer", data = {name = name, ok = false}} end
      result('say "hi" \\now')
      result("line\nbreak")
      for i = 1, 205 do result(("t%03d"):format(i)) end
      runs.finish{status = "succeeded"}
    ]])
    H.ok(H.moonhive({ "run", "names.lua" }, { cwd = dir, env = env }))
    local srv = H.start_service(env)
    local r = H.curl({ "-H", "Authorization: Bearer " .. key, srv.url("/metrics") })
    assert.equal(0, srv.stop())
    assert.matches('moonhive_tool_calls_total{ok="false",tool="say \\"hi\\" \\\\now"} 1', r.stdout, 1, true)
    assert.matches('moonhive_tool_calls_total{ok="false",tool="line?break"} 1', r.stdout, 1, true)
    local m = parse(r.stdout)
    -- 200 names of their own, the 7 after them as "(other)"
    assert.equal(201, #m.moonhive_tool_calls_total.samples)
    assert.equal(7, value(m, "moonhive_tool_calls_total", { tool = "(other)", ok = "false" }))
    assert.equal(1, value(m, "moonhive_tool_calls_total", { tool = "t198", ok = "false" }))
    assert.is_nil(value(m, "moonhive_tool_calls_total", { tool = "t199", ok = "false" }))
  end)
end)

describe("GET /v1/openapi.json", function()
  it("answers without credentials with the OpenAPI 3.1 document of the routes", function()
    local srv = H.start_service()
    local r = H.curl({ "-i", srv.url("/v1/openapi.json") })
    local version = cjson.decode(H.curl({ srv.url("/health") }).stdout).version
    assert.equal(0, srv.stop())
    local head, body = r.stdout:match("^(.-)\r\n\r\n(.*)$")
    assert.matches("^HTTP/1%.1 200", head)
    assert.matches("Content-Type: application/json", head, 1, true)
    local doc = cjson.decode(body)
    assert.equal("3.1.0", doc.openapi)
    assert.equal(version, doc.info.version)
    assert.equal("viewer", doc.paths["/metrics"].get["x-moonhive-role"])
    assert.equal("public", doc.paths["/v1/openapi.json"].get["x-moonhive-role"])
    assert.is_nil(body:find("\\/", 1, true)) -- slashes written plainly
  end)
end)
