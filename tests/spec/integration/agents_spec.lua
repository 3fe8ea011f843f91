-- Agents end to end: agent files run by `moonhive run` against the offline
-- mock model (directives in the task script its replies), with tools,
-- schema-checked arguments, concurrency, timeouts, delegation, hand-offs,
-- memory, budgets, and the recorded runs `moonhive runs` shows.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

describe("agents", function()
  local project, data

  local AGENTS = {
    helper = [[
return agent{
  name = "helper", system = "You help.", max_iterations = 4,
  tools = {
    "calculator", "files", "run_code",
    tool{name = "add", description = "adds two numbers",
         params = {type = "object", properties = {a = {type = "number"}, b = {type = "number"}}, required = {"a", "b"}},
         run = function(args) return args.a + args.b end},
    tool{name = "slow", description = "sleeps", timeout = 200,
         params = {type = "object", properties = {ms = {type = "integer"}}},
         run = function(args) sleep(args.ms or 50) return "slept " .. (args.ms or 50) end},
    tool{name = "boom", description = "fails", run = function() error("the tool broke", 0) end},
  },
}]],
    boss = [[
return agent{
  name = "boss",
  run = function(self, input, ctx)
    ctx.memory.note = "from boss"
    if input == "handoff" then return ctx:handoff("clerk", "please finish") end
    local answer = ctx:ask("clerk", "check " .. input)
    return "boss got: " .. answer
  end,
}]],
    clerk = [[
return agent{
  name = "clerk",
  run = function(self, input, ctx)
    return "clerk saw '" .. tostring(input) .. "' and memory " .. tostring(ctx.memory.note)
  end,
}]],
    frugal = [[return agent{name = "frugal", budget = {tokens = 5}}]],
    rememberer = [[return agent{name = "rememberer", tools = {"remember", "memory_search"}, memory = {long_term = true}}]],
    chatty = [[return agent{name = "chatty", tools = {tool{name = "add", run = function() return 1 end}},
                            max_iterations = 30, memory = {short_term = {max_messages = 4}}}]],
    broken = "return agent{name = 'broken', tools = {'no_such_tool'}}",
  }

  local function run(args, extra_env)
    local env = {MOONHIVE_DATA = data, MOONHIVE_MODEL = "mock/test", OPENAI_API_KEY = false, ANTHROPIC_API_KEY = false}
    for k, v in pairs(extra_env or {}) do env[k] = v end
    return H.moonhive(args, {cwd = project, env = env})
  end

  -- exit 0 (progress on stderr is expected)
  local function ok(res) assert.equals(0, res.code, H.show(res)) end

  local function last_run()
    local res = run({"runs", "--json", "--limit", "1"})
    H.ok(res)
    local id = cjson.decode(res.stdout)[1].id
    local shown = run({"runs", "show", id, "--json"})
    H.ok(shown)
    return cjson.decode(shown.stdout)
  end

  local function kinds(run_record)
    local out = {}
    for _, ev in ipairs(run_record.events) do out[#out + 1] = ev.kind end
    return out
  end

  lazy_setup(function()
    project = H.tmpdir()
    data = project .. "/.moonhive"
    require("luv").fs_mkdir(project .. "/agents", 448)
    for name, src in pairs(AGENTS) do H.write(project .. "/agents/" .. name .. ".lua", src) end
  end)
  lazy_teardown(H.cleanup)

  it("runs an agent file: tool calls stream on stderr, the answer on stdout, the run is recorded", function()
    local res = run({"run", "agents/helper.lua", 'add [tool:add:{"a":2,"b":3}]'})
    ok(res)
    assert.equals("mock: tool results: 5\n", res.stdout)
    assert.matches('[helper] → add {"a":2,"b":3}', res.stderr, 1, true)
    assert.matches("[helper] ← add: 5", res.stderr, 1, true)
    local r = last_run()
    assert.equals("helper", r.agent)
    assert.equals("succeeded", r.status)
    assert.equals('add [tool:add:{"a":2,"b":3}]', r.input)
    assert.equals("mock: tool results: 5", r.output)
    assert.same({"model_call", "tool_call", "tool_result", "model_call"}, kinds(r))
    assert.same({a = 2, b = 3}, r.events[2].data.arguments)
    assert.is_true(r.tokens_in > 0)
    local list = run({"runs"})
    ok(list)
    assert.matches(r.id, list.stdout, 1, true)
    local shown = run({"runs", "show", r.id:sub(1, 14)})
    ok(shown)
    assert.matches("tool_result", shown.stdout, 1, true)
  end)

  it("--json prints one machine-readable result", function()
    local res = run({"run", "--json", "agents/helper.lua", "hello there"})
    ok(res)
    local v = cjson.decode(res.stdout)
    assert.equals("mock: hello there", v.output)
    assert.equals("succeeded", v.status)
    assert.equals("helper", v.agent)
    assert.equals(1, v.iterations)
    assert.is_string(v.run_id)
    assert.is_true(v.usage.input > 0)
    assert.equals("", res.stderr)
  end)

  it("takes its task after --input too, as a workflow takes its input", function()
    local res = run({"run", "--json", "agents/helper.lua", "--input", "hello there"})
    ok(res)
    assert.equals("mock: hello there", cjson.decode(res.stdout).output)
  end)

  it("invalid arguments, unknown tools and tool errors go back to the model as tool results", function()
    local res = run({"run", "agents/helper.lua",
                     'go [tool:add:{"a":"x"}] [tool:nope:{}] [tool:boom:{}] [tool:add:{"a":1,"b":1}]'})
    ok(res)
    local results = res.stdout:match("^mock: tool results: (.*)\n$")
    assert.matches('error: invalid arguments (2 errors):\n- $: missing required property "b"\n- $.a: expected number, got string',
                   results, 1, true)
    assert.matches("error: no tool 'nope' (this agent can use: calculator, files, run_code, add, slow, boom)", results, 1, true)
    assert.matches("error: the tool broke", results, 1, true)
    assert.matches("| 2$", results)
  end)

  it("runs several tool calls at once and bounds each by its timeout", function()
    local res = run({"run", "agents/helper.lua", 'go [tool:slow:{"ms":100}] [tool:slow:{"ms":100}] [tool:slow:{"ms":5000}]'})
    ok(res)
    assert.matches("slept 100 | slept 100 | error: tool 'slow' timed out after 200 ms", res.stdout, 1, true)
    -- all three were called before any answered: they ran concurrently
    assert.same({"model_call", "tool_call", "tool_call", "tool_call", "tool_result", "tool_result", "tool_result",
                 "model_call"}, kinds(last_run()))
  end)

  it("stops at max_iterations with a clear error, recorded as failed", function()
    local res = run({"run", "agents/helper.lua", 'loop [tool:add:{"a":1,"b":1}]'},
                    {MOONHIVE_MODEL = "mock/test"})
    -- the mock answers a tool round with text, so script a loop with a custom model reply list instead
    ok(res)
    local code = [[
      local a = agent{name = "looper", max_iterations = 3,
                      tools = {tool{name = "t", run = function() return "again" end}}}
      local ok, err = pcall(a.run, a, "x", {mock = {{tool_calls = {{name = "t", arguments = {}}}}}})
      return {ok, err, runs.current() ~= nil}]]
    local e = H.eval(code, {cwd = project, env = {MOONHIVE_DATA = data, MOONHIVE_MODEL = "mock/test"}})
    ok(e)
    assert.matches("agent 'looper' reached max_iterations (3) without a final answer", e.stdout, 1, true)
    local r = last_run()
    assert.equals("looper", r.agent)
    assert.equals("failed", r.status)
    assert.matches("max_iterations", r.error, 1, true)
  end)

  it("delegates with ctx:ask, sharing the run's working memory", function()
    local res = run({"run", "agents/boss.lua", "the books"})
    ok(res)
    assert.equals("boss got: clerk saw 'check the books' and memory from boss\n", res.stdout)
    local r = last_run()
    assert.equals("boss", r.agent)
    assert.same({"delegate"}, kinds(r))
    assert.equals("clerk", r.events[1].data.to)
  end)

  it("hands a conversation off to another agent", function()
    local res = run({"run", "agents/boss.lua", "handoff"})
    ok(res)
    assert.equals("clerk saw 'please finish' and memory from boss\n", res.stdout)
    assert.same({"handoff"}, kinds(last_run()))
  end)

  it("a budget stops the agent with a clear error", function()
    local res = run({"run", "agents/frugal.lua", "one two three four five six seven"})
    assert.equals(1, res.code, H.show(res))
    assert.matches("agent 'frugal' went over its budget of 5 tokens", res.stderr, 1, true)
    assert.equals("failed", last_run().status)
  end)

  it("long-term memory outlives the run and is searched by relevance", function()
    ok(run({"run", "agents/rememberer.lua", 'note [tool:remember:{"text":"The staging database is db7.internal"}]'}))
    ok(run({"run", "agents/rememberer.lua", 'note [tool:remember:{"text":"Bananas are yellow"}]'}))
    local res = run({"run", "agents/rememberer.lua", 'find [tool:memory_search:{"query":"which staging database?"}]'})
    ok(res)
    assert.matches("db7.internal", res.stdout, 1, true)
    assert.is_nil(res.stdout:find("Bananas", 1, true))
  end)

  it("keeps the conversation within short_term.max_messages", function()
    local code = [[
      local a = require("agents.chatty")
      local turns = {}
      for i = 1, 6 do turns[i] = {tool_calls = {{name = "add", arguments = {}}}} end
      turns[7] = {content = "done"}
      return (a:run("start", {mock = turns}))]]
    local e = H.eval(code, {cwd = project, env = {MOONHIVE_DATA = data, MOONHIVE_MODEL = "mock/test"}})
    -- the scripted mock answers by counting assistant messages, which trimming removes: it never reaches "done"
    assert.matches("reached max_iterations", e.stderr, 1, true)
    local r = last_run()
    local trimmed = 0
    for _, ev in ipairs(r.events) do if ev.kind == "memory_trimmed" then trimmed = trimmed + 1 end end
    assert.is_true(trimmed > 0)
  end)

  it("files and run_code share the run's workspace, and nothing leaves it", function()
    local res = run({"run", "agents/helper.lua",
      'go [tool:files:{"op":"write","path":"notes/a.txt","text":"hi"}] ' ..
      '[tool:run_code:{"language":"python3","code":"print(open(\\"notes/a.txt\\").read().upper())"}] ' ..
      '[tool:files:{"op":"read","path":"../../etc/passwd"}] [tool:run_code:{"language":"sh","code":"echo $HOME"}]'})
    ok(res)
    assert.matches('{"path":"notes/a.txt","written":2}', res.stdout, 1, true)
    assert.matches('"stdout":"HI\\n"', res.stdout, 1, true)
    assert.matches("error: files: path '../../etc/passwd' leaves the workspace", res.stdout, 1, true)
    assert.matches('"stdout":"\\n"', res.stdout, 1, true) -- an empty environment: no HOME
    local r = last_run()
    assert.equals("hi", H.read(data .. "/workspaces/" .. r.id .. "/notes/a.txt"))
  end)

  it("the calculator evaluates arithmetic and cannot run code", function()
    local res = run({"run", "agents/helper.lua",
      'go [tool:calculator:{"expression":"2^10 + sqrt(16) * (3 - 1) - round(2.345, 2)"}] ' ..
      '[tool:calculator:{"expression":"os.exit()"}] [tool:calculator:{"expression":"1/0"}]'})
    ok(res)
    assert.matches('{"result":1029.65}', res.stdout, 1, true)
    assert.matches("error: unknown name 'os' at position 3", res.stdout, 1, true)
    assert.matches("error: the result is not a finite number", res.stdout, 1, true)
  end)

  it("an agent file that does not load says which and why", function()
    local res = run({"run", "agents/broken.lua", "x"})
    assert.equals(1, res.code)
    assert.matches("agent: broken: no built-in tool 'no_such_tool'", res.stderr, 1, true)
    local e = H.eval([[return pcall(function() return agent{name = "x"}:run("y", {ctx = nil}) end),
                       pcall(require("agent").load, "broken")]], {cwd = project, env = {MOONHIVE_DATA = data}})
    assert.matches("cannot load agents/broken.lua: .*no built%-in tool 'no_such_tool'", e.stdout)
  end)
end)
