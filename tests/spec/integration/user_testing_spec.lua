-- user_testing_spec.lua — `moonhive test` and the moonhive.test fixture, as a
-- user meets them: temporary projects with agents and busted specs of their
-- own, run through the real binary; and the worked example of
-- docs/testing.md (examples/testing), so the documentation stays true.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local uv = require "luv"

-- `moonhive test ARGS...` in dir; busted's summary is on stdout.
local function mh_test(dir, args, env)
  local argv = {"test"}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return H.moonhive(argv, {cwd = dir, env = env})
end

local function summary(res)
  local ok, failed, errors = res.stdout:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
  return tonumber(ok), tonumber(failed), tonumber(errors)
end

local AGENT = [[
return agent{
  name = "helper",
  model = "openai/gpt-4o-mini",
  system = "You help with numbers.",
  tools = {
    "calculator",
    tool{name = "note", description = "keeps a note",
         params = {type = "object", properties = {text = {type = "string"}}, required = {"text"}},
         run = function(args) return "noted: " .. args.text end},
  },
  max_iterations = 4,
}
]]

-- A project: agents/helper.lua, scripts/ask.lua and plain.lua, and spec files {name = source}.
local function project(specs)
  local dir = H.tmpdir()
  for _, sub in ipairs({"agents", "scripts", "spec"}) do uv.fs_mkdir(dir .. "/" .. sub, 448) end
  H.write(dir .. "/agents/helper.lua", AGENT)
  H.write(dir .. "/scripts/ask.lua", [[
local res, err = llm.chat{messages = {{role = "user", content = table.concat({...}, " ")}}}
if not res then error(err, 0) end
print("model said: " .. res.content)
]])
  H.write(dir .. "/scripts/plain.lua", "print('just a script')\n")
  for name, src in pairs(specs) do H.write(dir .. "/spec/" .. name, src) end
  return dir
end

local PASSING = [[
local mh = require "moonhive.test"

describe("helper", function()
  it("runs the scripted tools for real and answers", function()
    local model = mh.mock_model()
    model:tool_calls({{"calculator", {expression = "6 * 7"}}, {"note", {text = "answer"}}})
    model:reply("The answer is 42.")
    local res = mh.run_agent("agents/helper.lua", "What is 6 times 7?", {model = model})
    assert.is_true(res.ok, res.error)
    assert.equals("The answer is 42.", res.output)
    assert.equals("helper", res.agent)
    assert.equals(2, res.iterations)
    assert.same({"calculator", "note"}, res.tool_names())
    assert.same({expression = "6 * 7"}, res.tool_calls[1].arguments)
    assert.same({result = 42}, res.tool_calls[1].result)
    assert.equals("noted: answer", res.tool_calls[2].result)
    assert.is_string(res.run_id)
  end)

  it("records what the agent sent to the model", function()
    local model = mh.mock_model()
    model:tool_call("calculator", {expression = "1 + 1"})
    model:reply("2")
    local res = mh.run_agent("helper", "one plus one", {model = model})
    assert.is_true(res.ok, res.error)
    assert.equals(2, #model.requests)
    assert.same(model.requests, res.requests)
    local first, second = model.requests[1], model.requests[2]
    assert.equals("openai/gpt-4o-mini", first.model)   -- what the agent asked for; the mock answered
    assert.equals("You help with numbers.", first.system)
    assert.same({{role = "user", content = "one plus one"}}, first.messages)
    assert.same({"calculator", "note"}, {first.tools[1].name, first.tools[2].name})
    assert.equals("assistant", second.messages[2].role)
    assert.equals("calculator", second.messages[2].tool_calls[1].name)
    assert.equals("tool", second.messages[3].role)
    assert.equals('{"result":2}', second.messages[3].content)
    assert.equals(0, model:remaining())
  end)

  it("fails the run clearly when the script runs out", function()
    local model = mh.mock_model()
    model:tool_call("calculator", {expression = "1 + 1"})
    local res = mh.run_agent("helper", "loop", {model = model})
    assert.is_false(res.ok)
    assert.equals("failed", res.status)
    assert.matches("the mock model's script has no reply left for call 2 (agent 'helper')", res.error, 1, true)
    assert.equals(2, #model.requests)
  end)

  it("routes replies by agent and by text", function()
    local model = mh.mock_model()
    model:reply("not for you", {agent = "someone_else"})
    model:reply("for the task about pears", {when = "pears"})
    local res = mh.run_agent("helper", "tell me about pears", {model = model})
    assert.is_true(res.ok, res.error)
    assert.equals("for the task about pears", res.output)
    assert.equals(1, model:remaining())
  end)

  it("reports an unknown tool and a failing model call", function()
    local model = mh.mock_model()
    model:tool_call("no_such_tool", {})
    model:fail("the provider is down")
    local res = mh.run_agent("helper", "try", {model = model})
    assert.is_false(res.ok)
    assert.matches("the provider is down", res.error, 1, true)
    assert.equals("no_such_tool", res.tool_calls[1].name)
    assert.is_false(res.tool_calls[1].ok)
    assert.matches("no tool 'no_such_tool'", res.tool_calls[1].error, 1, true)
  end)

  it("gives a clear error for a file that is not an agent", function()
    local res = mh.run_agent("scripts/plain.lua", "hi", {model = mh.mock_model()})
    assert.is_false(res.ok)
    assert.matches("--json is for files that return an agent", res.error, 1, true)
  end)

  it("runs plain scripts against the scripted model", function()
    local model = mh.mock_model()
    model:reply("hello back")
    local res = mh.run_script("scripts/ask.lua", {"hello", "model"}, {model = model})
    assert.is_true(res.ok, res.error)
    assert.equals("model said: hello back\n", res.stdout)
    assert.equals("hello model", model.requests[1].messages[1].content)
    local empty = mh.run_script("scripts/ask.lua", {"again"})
    assert.is_false(empty.ok)
    assert.matches("no reply left for call 1", empty.error, 1, true)
  end)
end)
]]

local FAILING = [[
local mh = require "moonhive.test"
describe("helper", function()
  it("expects the wrong answer", function()
    local model = mh.mock_model()
    model:reply("yes")
    local res = mh.run_agent("helper", "anything", {model = model})
    assert.equals("no", res.output)
  end)
end)
]]

describe("moonhive test", function()
  lazy_teardown(H.cleanup)

  it("runs the worked example of docs/testing.md (examples/testing)", function()
    local res = mh_test(H.root .. "/examples/testing")
    assert.equals(0, res.code, H.show(res))
    assert.same({5, 0, 0}, {summary(res)})
  end)

  it("runs a project's specs from spec/ and passes when they pass", function()
    local dir = project({["helper_spec.lua"] = PASSING})
    local res = mh_test(dir)
    assert.equals(0, res.code, H.show(res))
    assert.same({7, 0, 0}, {summary(res)})
  end)

  it("exits non-zero when a spec fails, naming it", function()
    local dir = project({["helper_spec.lua"] = PASSING, ["wrong_spec.lua"] = FAILING})
    local res = mh_test(dir)
    assert.is_true(res.code ~= 0, H.show(res))   -- busted's status: failures + errors
    assert.same({7, 1, 0}, {summary(res)})
    assert.matches("expects the wrong answer", res.stdout, 1, true)
  end)

  it("passes busted options and paths through; MOONHIVE_PROJECT names the project", function()
    local dir = project({["helper_spec.lua"] = PASSING, ["wrong_spec.lua"] = FAILING})
    local res = mh_test(H.tmpdir(), {"-o", "TAP", "--filter", "records what", "spec/helper_spec.lua"},
                        {MOONHIVE_PROJECT = dir})
    assert.equals(0, res.code, H.show(res))
    assert.matches("^ok 1 %- helper records what the agent sent to the model\n1%.%.1\n$", res.stdout)
  end)

  it("also finds tests/ when there is no spec/", function()
    local dir = H.tmpdir()
    uv.fs_mkdir(dir .. "/tests", 448)
    H.write(dir .. "/tests/plain_spec.lua", [[
local mh = require "moonhive.test"
it("finds the fixture", function() assert.is_function(mh.run_agent) end)]])
    local res = mh_test(dir)
    assert.equals(0, res.code, H.show(res))
    assert.same({1, 0, 0}, {summary(res)})
  end)

  it("says what to do without busted on PATH", function()
    local res = mh_test(H.tmpdir(), {}, {PATH = "/nonexistent"})
    local err = H.fails(res, 1)
    assert.matches("busted was not found on PATH; install it (Debian: apt-get install lua-busted", err, 1, true)
  end)

  it("says what to do without specs", function()
    local dir = H.tmpdir()
    local err = H.fails(mh_test(dir), 1)
    assert.matches("no spec/ or tests/ folder in .*moonhive test PATH", err)
  end)

  it("has its help", function()
    local out = H.ok(H.moonhive({"help", "test"}))
    assert.matches("^usage: moonhive test", out)
    assert.equals(out, H.ok(H.moonhive({"test", "--help"})))
    assert.matches("\n  test ", H.ok(H.moonhive({"help"})), 1, true)
  end)

  it("keeps the mock's files out of the sandbox's reach", function()
    local res = H.eval("return pcall(require, 'host')", {env = {MOONHIVE_MOCK_SCRIPT = "/etc/passwd"}})
    assert.matches("^false\t", H.ok(res))
  end)
end)
