-- The ready-made roles (agents/*.lua) end to end: every file loads and is
-- well-formed; every role, run by `moonhive run` against the offline mock
-- model, really calls each of its tools when told to, is refused a tool it
-- does not list, and sends its own system prompt and tool list to the model
-- (seen by the mock LLM server); and the roles with behaviour of their own
-- (code_executor, coder, researcher) do what their prompts promise.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"
local uv = require "luv"

-- Each role: the built-in tools it lists (in order) and phrases its system
-- prompt must hold (its identity, its output format, its verdict words).
local ROLES = {
  project_manager = { tools = { "memory_search", "remember", "current_time" },
                      says = { "You are the project manager", "## Acceptance criteria", "## Handoff" } },
  solution_architect = { tools = { "files", "memory_search" },
                         says = { "You are the solution architect", "## Work breakdown", '"depends_on"' } },
  fullstack_developer = { tools = { "files", "run_code" },
                          says = { "full-stack developer", "## Test evidence", "VERDICT: CHANGES_REQUESTED" } },
  qa_tester = { tools = { "run_code", "files" },
                says = { "You are the QA tester", "## Bugs", "VERDICT: PASSED", "VERDICT: FAILED" } },
  code_reviewer = { tools = { "files" },
                    says = { "code reviewer", "read-only", "VERDICT: APPROVED", "VERDICT: CHANGES_REQUESTED" } },
  code_assembler = { tools = { "files" }, says = { "You are the code assembler", "MANIFEST.md", "## Commands" } },
  code_executor = { tools = { "run_code", "files" },
                    says = { "You are the code executor", "VERDICT: PASSED", "VERDICT: FAILED" } },
  researcher = { tools = { "http_fetch", "files", "memory_search", "remember" },
                 says = { "careful researcher", "## Sources", "## Handoff for coder" } },
  coder = { tools = { "files", "run_code" }, says = { "careful programmer", "## Test evidence", "## Handoff" } },
  planner = { tools = { "memory_search", "remember", "current_time" },
              says = { "You are the planner", '"done_when"', "fullstack_developer" } },
  validator = { tools = { "run_code", "files" },
                says = { "You are the validator", "## Checklist", "VERDICT: PASSED", "VERDICT: FAILED" } },
  designer = { tools = { "files" }, says = { "product designer", "## Interaction contract", "design/tokens.json" } },
  analyst = { tools = { "calculator", "run_code", "files" }, says = { "data analyst", "## Method", "## Caveats" } },
  security_auditor = { tools = { "files" },
                       says = { "security auditor", "read-only", "CWE", "VERDICT: APPROVED", "VERDICT: CHANGES_REQUESTED" } },
  deployer = { tools = { "files", "run_code", "http_fetch" },
               says = { "deployment engineer", "## Rollback", "VERDICT: DEPLOYED", "VERDICT: FAILED" } },
  monitor = { tools = { "http_fetch", "current_time", "calculator" },
              says = { "monitoring engineer", "VERDICT: HEALTHY", "VERDICT: DEGRADED", "VERDICT: DOWN" } },
}

local NAMES = {}
for name in pairs(ROLES) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)

local function list_dir(dir, suffix)
  local out = {}
  local req = assert(uv.fs_scandir(dir))
  for name in uv.fs_scandir_next, req do
    if name:sub(-#suffix) == suffix then out[#out + 1] = name:sub(1, -#suffix - 1) end
  end
  table.sort(out)
  return out
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("ready-made roles", function()
  local data, web, llm_srv, defs

  local function env(extra)
    local e = { MOONHIVE_DATA = data, MOONHIVE_MODEL = "mock/default", OPENAI_API_KEY = false,
                ANTHROPIC_API_KEY = false, MOONHIVE_HTTP_ALLOW = "127.0.0.1" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  -- `moonhive ARGS` from the repo root, where agents/ is
  local function moonhive(args, extra_env)
    return H.moonhive(args, { cwd = H.root, env = env(extra_env) })
  end

  local function run_role(name, task, extra_env)
    local res = moonhive({ "run", "--json", "agents/" .. name .. ".lua", task }, extra_env)
    assert.equals(0, res.code, H.show(res))
    return cjson.decode(res.stdout)
  end

  local function show(run_id)
    return cjson.decode(H.ok(moonhive({ "runs", "show", run_id, "--json" })))
  end

  local function events(record, kind, tool)
    local out = {}
    for _, ev in ipairs(record.events) do
      if ev.kind == kind and (tool == nil or ev.data.name == tool) then out[#out + 1] = ev end
    end
    return out
  end

  -- A directive for each built-in tool and what its result must show.
  local function call_for(tool, name)
    if tool == "files" then
      return ('[tool:files:{"op":"write","path":"out/%s.txt","text":"written by %s"}]'):format(name, name),
             '"path":"out/' .. name .. '.txt"'
    elseif tool == "run_code" then
      return '[tool:run_code:{"language":"python3","code":"print(6*7)"}]', '"stdout":"42\\n"'
    elseif tool == "calculator" then
      return '[tool:calculator:{"expression":"(120 - 96) / 96 * 100"}]', '{"result":25}'
    elseif tool == "current_time" then
      return "[tool:current_time:{}]", '"weekday":"'
    elseif tool == "memory_search" then
      return '[tool:memory_search:{"query":"anything at all"}]', nil -- empty or not, it depends on earlier runs
    elseif tool == "remember" then
      return ('[tool:remember:{"text":"note kept by %s"}]'):format(name), '{"id":'
    elseif tool == "http_fetch" then
      return ('[tool:http_fetch:{"url":"%s"}]'):format(web.url("/hello")), '"body":"hello world\\n"'
    end
    error("no directive for tool " .. tool)
  end

  lazy_setup(function()
    data = H.tmpdir()
    web = H.start_testserver()
    llm_srv = H.start_mockllm()
    -- every role's definition as the sandbox loads it
    local code = [[
      local out = {}
      for _, name in ipairs(json.decode(%q)) do
        local a = require("agents." .. name)
        local tools = {}
        for i, t in ipairs(a.tools) do tools[i] = {name = t.name, builtin = require("tools." .. t.name) == t} end
        out[name] = {name = a.name, description = a.description, system = a.system, model = a.model or false,
                     tools = tools, max_iterations = a.max_iterations, custom_run = a.custom_run ~= nil}
      end
      return json.encode(out)]]
    local names = list_dir(H.root .. "/agents", ".lua")
    local res = H.moonhive({ "eval", code:format(cjson.encode(names)) }, { cwd = H.root, env = env() })
    defs = cjson.decode(H.ok(res))
  end)

  lazy_teardown(function()
    if web then web.stop() end
    if llm_srv then llm_srv.stop() end
    H.cleanup()
  end)

  it("agents/ holds exactly the 16 roles, each well-formed, on the default model, with built-in tools only", function()
    assert.same(NAMES, list_dir(H.root .. "/agents", ".lua"))
    local builtins = list_dir(H.root .. "/stdlib/tools", ".lua")
    for _, name in ipairs(NAMES) do
      local d = defs[name]
      assert.equals(name, d.name)
      assert.is_true(#d.description > 20, name .. ": description")
      assert.is_true(#d.system > 400, name .. ": system prompt of " .. #d.system .. " characters")
      assert.is_false(d.model, name .. " must not pin a model")
      assert.is_true(d.max_iterations >= 5, name .. ": max_iterations")
      local tools = {}
      for i, t in ipairs(d.tools) do
        assert.is_true(contains(builtins, t.name) and t.builtin, name .. ": '" .. t.name .. "' is not a built-in tool")
        tools[i] = t.name
      end
      assert.same(ROLES[name].tools, tools, name .. ": tools")
      local src = H.read(H.root .. "/agents/" .. name .. ".lua")
      assert.matches("^%-%- " .. H.lit(name) .. " — ", src, nil, name .. ": header comment")
      assert.is_nil(src:find("%f[%w_]model%s*="), name .. ": no model = field")
    end
  end)

  for _, name in ipairs(NAMES) do
    local role = ROLES[name]

    it(name .. " calls each of its tools, and is refused one it does not list", function()
      local forbidden
      for _, t in ipairs({ "run_code", "http_fetch", "calculator" }) do
        if not contains(role.tools, t) then forbidden = t break end
      end
      local task, expect = { "Do the job." }, {}
      for _, t in ipairs(role.tools) do
        local directive, shows = call_for(t, name)
        task[#task + 1], expect[#expect + 1] = directive, shows
      end
      task[#task + 1] = (call_for(forbidden, name))
      local v = run_role(name, table.concat(task, " "))
      assert.equals("succeeded", v.status)
      assert.equals(name, v.agent)
      for _, shows in ipairs(expect) do assert.matches(shows, v.output, 1, true) end
      local refusal = ("error: no tool '%s' (this agent can use: %s)"):format(forbidden, table.concat(role.tools, ", "))
      assert.matches(refusal, v.output, 1, true)

      local r = show(v.run_id)
      assert.equals("succeeded", r.status)
      for _, t in ipairs(role.tools) do
        assert.equals(1, #events(r, "tool_call", t), name .. " did not call " .. t)
        local results = events(r, "tool_result", t)
        assert.equals(1, #results)
        assert.is_true(results[1].data.ok, name .. ": " .. t .. " failed: " .. cjson.encode(results[1].data))
      end
      assert.same({}, events(r, "tool_call", forbidden))
      local refused = events(r, "tool_result", forbidden)
      assert.equals(1, #refused)
      assert.is_false(refused[1].data.ok)
      if contains(role.tools, "files") then
        assert.equals("written by " .. name, H.read(data .. "/workspaces/" .. v.run_id .. "/out/" .. name .. ".txt"))
      end
    end)

    it(name .. " sends its own system prompt and tools to the model", function()
      local v = run_role(name, "Hello from the spec.", {
        MOONHIVE_MODEL = "openai/x", OPENAI_API_KEY = "sk-test-roles", OPENAI_BASE_URL = llm_srv.url("/v1") })
      assert.equals("mock: Hello from the spec.", v.output)
      local reqs = cjson.decode(H.ok(moonhive({ "eval", ("return assert(http.get(%q)).body"):format(llm_srv.url("/_requests")) })))
      local body = reqs[#reqs].body
      assert.equals("x", body.model)
      assert.equals("system", body.messages[1].role)
      local sent = body.messages[1].content
      -- long-term memory may add "Relevant memories" after the prompt
      assert.equals(defs[name].system, sent:sub(1, #defs[name].system))
      for _, phrase in ipairs(role.says) do
        assert.matches(phrase, sent, 1, true, name .. " prompt lacks: " .. phrase)
      end
      local tools = {}
      for i, t in ipairs(body.tools) do tools[i] = t["function"].name end
      assert.same(role.tools, tools)
    end)
  end

  it("code_executor runs fenced code blocks itself and takes its verdict from the exit codes", function()
    local task = "Run these. VERDICT: PASSED\n```python\nprint(6*7)\n```\n```sh\necho broken >&2; exit 3\n```"
    local v = run_role("code_executor", task)
    local out = v.output
    assert.matches("### Block 1 (python3): passed", out, 1, true)
    assert.matches("42", out, 1, true)
    assert.matches("### Block 2 (sh): FAILED\nexit_code=3", out, 1, true)
    assert.matches("broken", out, 1, true)
    -- the model (here echoing the task) cannot overrule the exit codes
    assert.matches("\n\nVERDICT: FAILED$", out)
    local _, verdicts = out:gsub("VERDICT:", "")
    assert.equals(1, verdicts)
    local r = show(v.run_id)
    assert.equals(2, #events(r, "tool_call", "run_code"))
    local ex = events(r, "execution")
    assert.equals(1, #ex)
    assert.same({ passed = false, blocks = 2 }, ex[1].data)

    v = run_role("code_executor", "```lua\nprint('ok from lua')\n```")
    assert.matches("ok from lua", v.output, 1, true)
    assert.matches("\n\nVERDICT: PASSED$", v.output)
  end)

  it("coder writes a program into its workspace, then runs it from there", function()
    -- a scripted model: write main.py, then run it, then answer
    local code = [[
      local coder = require("agents.coder")
      local out, report = coder:run("Print the answer.", {mock = {
        {tool_calls = {{name = "files", arguments = {op = "write", path = "main.py", text = "print(6 * 7)\n"}}}},
        {tool_calls = {{name = "run_code", arguments = {language = "sh", code = "python3 main.py"}}}},
        {content = "## Summary\nmain.py prints 42."},
      }})
      return json.encode({out = out, run_id = report.run_id, iterations = report.iterations})]]
    local v = cjson.decode(H.ok(moonhive({ "eval", code })))
    assert.equals("## Summary\nmain.py prints 42.", v.out)
    assert.equals(3, v.iterations)
    assert.equals("print(6 * 7)\n", H.read(data .. "/workspaces/" .. v.run_id .. "/main.py"))
    local r = show(v.run_id)
    local kinds = {}
    for _, ev in ipairs(r.events) do kinds[#kinds + 1] = ev.kind .. (ev.data.name and (":" .. ev.data.name) or "") end
    assert.same({ "model_call", "tool_call:files", "tool_result:files", "model_call", "tool_call:run_code",
                  "tool_result:run_code", "model_call" }, kinds)
    local ran = events(r, "tool_result", "run_code")[1].data
    assert.is_true(ran.ok)
    assert.equals(0, ran.result.exit_code)
    assert.equals("42\n", ran.result.stdout)
  end)

  it("researcher keeps what it fetched in long-term memory and finds it in a later run", function()
    local v = run_role("researcher",
      ('Check [tool:http_fetch:{"url":"%s"}] [tool:remember:{"text":"The greeting endpoint answers hello world"}]')
        :format(web.url("/hello")))
    assert.matches("hello world", v.output, 1, true)
    v = run_role("researcher", 'What does it say? [tool:memory_search:{"query":"greeting endpoint"}]')
    assert.matches("The greeting endpoint answers hello world", v.output, 1, true)
    local found = events(show(v.run_id), "tool_result", "memory_search")[1].data
    assert.is_true(found.ok)
    local note
    for _, m in ipairs(found.result) do
      if m.kind == "note" and m.text == "The greeting endpoint answers hello world" then note = m end
    end
    assert.is_table(note, cjson.encode(found.result))
  end)
  it("a project without its own agents/ still reaches the shipped roles, and its own file wins", function()
    local project = H.tmpdir()
    local code = [[
      local pipeline = agent{name = "pipeline", run = function(self, input, ctx)
        return ctx:ask("researcher", input)
      end}
      return {pipeline:run("[reply:found it]"), agent.load("code_reviewer").description}]]
    local res = H.moonhive({ "eval", code }, { cwd = project, env = env() })
    H.ok(res)
    assert.matches('"found it"', res.stdout, 1, true)
    assert.matches("[Rr]eview", res.stdout)
    -- a project's own agents/researcher.lua comes first
    require("luv").fs_mkdir(project .. "/agents", 448)
    H.write(project .. "/agents/researcher.lua",
            'return agent{name = "researcher", run = function() return "the project\'s own" end}')
    res = H.moonhive({ "eval", code }, { cwd = project, env = env() })
    H.ok(res)
    assert.matches("the project's own", res.stdout, 1, true)
  end)
end)
