-- llm with the offline mock provider: the bridge from a sandbox to the
-- trusted runtime and back (request copied in, deltas and result copied out),
-- default model selection, tool calls, scripted replies, embeddings, errors.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")

local NO_KEYS = {OPENAI_API_KEY = false, ANTHROPIC_API_KEY = false, MOONHIVE_MODEL = false,
                 OPENAI_BASE_URL = false, ANTHROPIC_BASE_URL = false}

local function env(extra)
  local e = {}
  for k, v in pairs(NO_KEYS) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Evaluates code; returns the value it returns, rebuilt from eval's rendering.
local function value(code, extra_env, flags)
  local res = H.eval(code, {env = env(extra_env), flags = flags})
  assert(res.code == 0, H.show(res))
  local f = assert(load("return " .. res.stdout, "=out", "t", {}))
  return f(), res
end

describe("llm (offline mock provider)", function()
  lazy_teardown(H.cleanup)

  it("answers with the mock model when no model and no key is set, and says so once", function()
    local res = H.eval([[
      local a = llm.chat{messages = {{role = "user", content = "hello there"}}}
      local b = llm.chat{messages = {{role = "user", content = "again"}}}
      return a.content .. "|" .. b.content .. "|" .. a.provider .. "|" .. a.model]], {env = env()})
    assert.equals("mock: hello there|mock: again|mock|default\n", H.ok({code = res.code, signal = res.signal,
      stdout = res.stdout, stderr = ""}))
    local _, notices = res.stderr:gsub("using mock/default", "")
    assert.equals(1, notices)
  end)

  it("MOONHIVE_MODEL picks the model", function()
    local v = value([[return llm.chat{messages = {{role = "user", content = "x"}}}]], {MOONHIVE_MODEL = "mock/tiny"})
    assert.equals("tiny", v.model)
    assert.equals("mock", v.provider)
  end)

  it("returns content, finish reason, usage and cost", function()
    local v = value([[return llm.chat{model = "mock/m", system = "be brief",
      messages = {{role = "user", content = "one two three"}}}]])
    assert.same({content = "mock: one two three", finish_reason = "stop", model = "m", provider = "mock",
                 usage = {input = 5, output = 4}, cost = 0}, v)
  end)

  it("streams deltas to the callback as they come, then returns the whole answer", function()
    local v = value([[
      local parts = {}
      local r = llm.chat{model = "mock/m", messages = {{role = "user", content = "a b c"}},
                         stream = function(d) parts[#parts + 1] = d.content end}
      return {parts = parts, content = r.content}]])
    assert.same({"mock: ", "a ", "b ", "c"}, v.parts)
    assert.equals("mock: a b c", v.content)
  end)

  it("a stream callback may wait, and its error ends the call", function()
    local v = value([[
      local n = 0
      local r = llm.chat{model = "mock/m", messages = {{role = "user", content = "a b"}},
                         stream = function(d) sleep(5) n = n + 1 end}
      local ok, err = pcall(llm.chat, {model = "mock/m", messages = {{role = "user", content = "a b"}},
                                       stream = function() error("callback failed") end})
      return {n = n, ok = ok, err = err:match("callback failed")}]])
    assert.same({n = 3, ok = false, err = "callback failed"}, v)
  end)

  it("returns tool calls with decoded arguments", function()
    local v = value([[return llm.chat{model = "mock/m", messages = {{role = "user",
      content = 'weather? [tool:get_weather:{"city":"Paris","days":{"n":2}}] [tool:clock:{}]'}}}]])
    assert.equals("tool_calls", v.finish_reason)
    assert.same({{id = "call_1", name = "get_weather", arguments = {city = "Paris", days = {n = 2}}},
                 {id = "call_2", name = "clock", arguments = {}}}, v.tool_calls)
  end)

  it("follows a scripted list turn by turn", function()
    local v = value([[
      local script = {{tool_calls = {{name = "lookup", arguments = {q = "x"}}}}, {content = "found it"}}
      local msgs = {{role = "user", content = "find x"}}
      local first = llm.chat{model = "mock/m", mock = script, messages = msgs}
      msgs[#msgs + 1] = {role = "assistant", tool_calls = first.tool_calls}
      msgs[#msgs + 1] = {role = "tool", tool_call_id = first.tool_calls[1].id, content = "42"}
      local second = llm.chat{model = "mock/m", mock = script, messages = msgs}
      return {first = first.tool_calls[1].name, second = second.content}]])
    assert.same({first = "lookup", second = "found it"}, v)
  end)

  it("embeds: equal texts give equal vectors", function()
    local v = value([[
      local r = llm.embed{model = "mock/e", input = {"hello world", "hello world", "zebra"}}
      local same = true
      for i = 1, #r.vectors[1] do same = same and r.vectors[1][i] == r.vectors[2][i] end
      return {n = #r.vectors, dims = #r.vectors[1], same = same}]])
    assert.same({n = 3, dims = 8, same = true}, v)
  end)

  it("reports bad requests as error values with a clear message", function()
    local v = value([[
      local _, a = llm.chat{model = "nope", messages = {{role = "user", content = "x"}}}
      local _, b = llm.chat{model = "other/x", messages = {{role = "user", content = "x"}}}
      local _, c = llm.chat{model = "mock/m", messages = {}}
      local _, d = llm.chat{model = "mock/m", mock = {{error = "scripted failure"}}, messages = {{role = "user", content = "x"}}}
      return {a, b, c, d}]])
    assert.matches("must be written provider/model", v[1], 1, true)
    assert.matches("unknown provider 'other'", v[2], 1, true)
    assert.matches("'messages' must be a non-empty list", v[3], 1, true)
    assert.equals("mock: scripted failure", v[4])
  end)

  it("refuses values that cannot cross into the runtime", function()
    local res = H.eval([[return llm.chat{messages = {{role = "user", content = print}}}]], {env = env()})
    assert.equals(1, res.code)
    assert.matches("cannot copy value at messages[1].content: a function cannot cross", res.stderr, 1, true)
  end)

  it("refuses a request bigger than the script itself could hold", function()
    local v = value([[
      local big = ("x"):rep(1 << 20)
      local messages = {}
      for i = 1, 20 do messages[i] = {role = "user", content = big} end
      local ok, e = pcall(llm.chat, {model = "mock/m", messages = messages})
      return {ok, e}]], nil, {"--memory-limit", "16M"})
    assert.is_false(v[1])
    assert.matches("cannot copy value at messages%[%d+%]%.content: too big", v[2])
  end)

  it("a long stream waits for a slow script instead of piling up in its memory", function()
    -- the mock hands out 750,000 deltas without pausing; queued all at once
    -- they would need ~5 MB more than the 8 MiB cap leaves
    local v = value([[
      local reply = ("a "):rep(750000)
      local n, bytes = 0, 0
      local r, err = llm.chat{model = "mock/m", mock = {{content = reply}},
        messages = {{role = "user", content = "x"}},
        stream = function(d) n = n + 1 bytes = bytes + #d.content end}
      return {n = n, bytes = bytes, same = r and r.content == reply, err = err}]], nil, {"--memory-limit", "8M"})
    assert.same({n = 750000, bytes = 1500000, same = true}, v)
  end)

  it("is cancelled with its run: the deadline stops a streaming call", function()
    local res = H.eval([[return llm.chat{model = "mock/m", messages = {{role = "user", content = "a b c d"}},
                                          stream = function() sleep(10000) end}]],
                       {env = env(), flags = {"--deadline", "300ms"}})
    assert.equals(1, res.code)
    assert.matches("deadline of 300 ms exceeded", res.stderr, 1, true)
  end)

  it("the runtime's privileges stay out of sandboxes", function()
    local v = value([[
      local a = pcall(require, "host")
      local b = pcall(require, "cjson")
      local c = pcall(require, "moonhive.llm")
      local ok, e = pcall(http.request, {url = "http://127.0.0.1:1/", auth = "openai"})
      return {a, b, c, ok, e:match("not available to sandboxed scripts") ~= nil}]])
    assert.same({false, false, false, false, true}, v)
  end)

  describe("the config file (moonhive.lua)", function()
    it("names the default model and aliases", function()
      local dir = H.tmpdir()
      H.write(dir .. "/moonhive.lua", [[return {model = "fast", aliases = {fast = "mock/quick", smart = "mock/clever"}}]])
      local res = H.eval([[local a = llm.chat{messages = {{role = "user", content = "x"}}}
        local b = llm.chat{model = "smart", messages = {{role = "user", content = "x"}}}
        return a.model .. " " .. b.model]], {env = env(), cwd = dir})
      assert.equals("quick clever\n", H.ok(res))
    end)

    it("MOONHIVE_MODEL wins over the file", function()
      local dir = H.tmpdir()
      H.write(dir .. "/moonhive.lua", [[return {model = "mock/from-file"}]])
      local res = H.eval([[return llm.chat{messages = {{role = "user", content = "x"}}}.model]],
                         {env = env({MOONHIVE_MODEL = "mock/from-env"}), cwd = dir})
      assert.equals("from-env\n", H.ok(res))
    end)

    it("is data only, and a broken file is reported", function()
      local dir = H.tmpdir()
      H.write(dir .. "/moonhive.lua", [[return {model = os.getenv("HOME")}]])
      local res = H.eval([[return llm.chat{messages = {{role = "user", content = "x"}}}.model]], {env = env(), cwd = dir})
      assert.equals(0, res.code, H.show(res))
      assert.matches("moonhive.lua", res.stderr, 1, true)
      assert.matches("os", res.stderr, 1, true)
      H.write(dir .. "/moonhive.lua", [[while true do end]])
      res = H.eval([[return llm.chat{messages = {{role = "user", content = "x"}}}.model]], {env = env(), cwd = dir})
      assert.matches("takes too long to evaluate", res.stderr, 1, true)
    end)
  end)

  describe("usage and budgets", function()
    it("llm.usage() totals the run's calls, its tasks' included", function()
      local v = value([[
        llm.chat{model = "mock/m", messages = {{role = "user", content = "one two"}}}
        task.spawn(function() return llm.chat{model = "mock/m", messages = {{role = "user", content = "x"}}} end):wait()
        return llm.usage()]])
      assert.same({calls = 2, input = 3, output = 5, cost = 0}, v)
    end)

    it("a token budget stops the run with a clear error, and pcall cannot keep it going", function()
      local res = H.eval([[for i = 1, 10 do pcall(llm.chat, {model = "mock/m",
        messages = {{role = "user", content = "one two three"}}}) end return "survived"]],
        {env = env(), flags = {"--token-budget", "20"}})
      assert.equals(1, res.code)
      assert.matches("token budget of 20 exceeded", res.stderr, 1, true)
      assert.is_nil(res.stdout:find("survived", 1, true))
    end)

    it("MOONHIVE_TOKEN_BUDGET sets it too; a bad value is refused", function()
      local res = H.eval([[for i = 1, 10 do llm.chat{model = "mock/m", messages = {{role = "user", content = "a b"}}} end]],
                         {env = env({MOONHIVE_TOKEN_BUDGET = "10"})})
      assert.matches("token budget of 10 exceeded", res.stderr, 1, true)
      res = H.eval("return 1", {env = env(), flags = {"--cost-budget", "lots"}})
      assert.equals(2, res.code)
      assert.matches("--cost-budget needs a dollar amount", res.stderr, 1, true)
    end)
  end)

  describe("review regressions", function()
    it("a task going over the token budget stops its parent too", function()
      local res = H.eval([[
        local ts = {}
        for i = 1, 5 do ts[i] = task.spawn(function()
          return llm.chat{model = "mock/m", messages = {{role = "user", content = ("w "):rep(50)}}} end) end
        for i = 1, 5 do ts[i]:wait() end
        sleep(50)
        return "parent kept going"]], {env = env(), flags = {"--token-budget", "100"}})
      assert.equals(1, res.code, H.show(res))
      assert.matches("token budget of 100 exceeded", res.stderr, 1, true)
      assert.is_nil(res.stdout:find("kept going", 1, true))
    end)

    it("the cache key includes scripted mock replies", function()
      local v = value([[
        local a = llm.chat{model = "mock/m", cache = true, mock = {{content = "A"}}, messages = {{role = "user", content = "k"}}}
        local b = llm.chat{model = "mock/m", cache = true, mock = {{content = "B"}}, messages = {{role = "user", content = "k"}}}
        return {a.content, b.content}]])
      assert.same({"A", "B"}, v)
    end)

    it("work done in the runtime for a script is bounded by that script's deadline", function()
      local res = H.eval([[return llm.chat{model = "mock/x", messages = {{role = "user",
        content = string.rep("[reply:", 8000)}}}]], {env = env(), flags = {"--deadline", "500ms", "--cpu-limit", "500ms"}})
      assert.equals(1, res.code)
      assert.matches("exceeded", res.stderr, 1, true)
    end)

    it("whole numbers in tool arguments stay integers", function()
      local v = value([[local r = llm.chat{model = "mock/m", messages = {{role = "user", content = '[tool:t:{"id":42,"xs":[1,3]}]'}}}
        return {tostring(r.tool_calls[1].arguments.id), math.type(r.tool_calls[1].arguments.xs[2])}]])
      assert.same({"42", "integer"}, v)
    end)

    it("a config file cannot run string methods", function()
      local dir = H.tmpdir()
      H.write(dir .. "/moonhive.lua", [[return {model = ("a"):rep(28):find(("a*"):rep(12) .. "b")}]])
      local res = H.eval([[return llm.chat{messages = {{role = "user", content = "x"}}}.model]],
                         {env = env(), cwd = dir, wait_ms = 20000})
      assert.equals(0, res.code, H.show(res))
      assert.matches("attempt to index a string value", res.stderr, 1, true)
    end)
  end)

  describe("moonhive chat", function()
    it("streams the reply to stdout and reports tokens and cost on stderr", function()
      local res = H.moonhive({"chat", "--model", "mock/cli", "--system", "be brief", "hello chat"}, {env = env()})
      assert.equals(0, res.code, H.show(res))
      assert.equals("mock: hello chat\n", res.stdout)
      assert.matches("[mock/cli] tokens: 4 in, 3 out; cost: $0.000000", res.stderr, 1, true)
    end)

    it("fails with status 1 and the provider's message", function()
      local res = H.moonhive({"chat", "--model", "nope", "x"}, {env = env()})
      assert.equals(1, res.code)
      assert.matches("must be written provider/model", res.stderr, 1, true)
    end)

    it("needs a prompt", function()
      local res = H.moonhive({"chat"}, {env = env()})
      assert.equals(2, res.code)
      assert.matches("chat needs a prompt", res.stderr, 1, true)
    end)
  end)
end)
