-- llm against the mock LLM server (tests/tools/mockllm.c), which speaks the
-- real OpenAI and Anthropic wire formats: requests as the providers expect
-- them, answers parsed, streams assembled, tool calls, retries, failures,
-- and keys that never reach a script.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local OPENAI_KEY = "sk-test-openai-SECRET-123456"
local ANTHROPIC_KEY = "sk-ant-test-SECRET-654321"

describe("llm providers against the mock LLM server", function()
  local srv

  local function env(extra)
    local e = {
      OPENAI_API_KEY = OPENAI_KEY, ANTHROPIC_API_KEY = ANTHROPIC_KEY, MOONHIVE_MODEL = false,
      OPENAI_BASE_URL = srv.url("/v1"), ANTHROPIC_BASE_URL = srv.url(""),
    }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  -- Runs code in a sandbox; returns what it returns (rebuilt) and the result.
  local function value(code, extra_env, flags)
    local res = H.eval(code, {env = env(extra_env), flags = flags})
    assert(res.code == 0, H.show(res))
    local f = load("return " .. res.stdout, "=out", "t", {})
    if f then return f(), res end
    return (res.stdout:gsub("\n$", "")), res -- a top-level string prints as it is
  end

  local function server(method, path)
    local res = H.eval(("local r = assert(http.request{method = %q, url = %q}) return r.body")
                       :format(method, srv.url(path)), {env = {}})
    return H.ok(res)
  end

  local function received()
    return cjson.decode(server("GET", "/_requests"))
  end

  lazy_setup(function() srv = H.start_mockllm() end)
  lazy_teardown(function() if srv then srv.stop() end H.cleanup() end)
  before_each(function() server("POST", "/_reset") end)

  describe("OpenAI", function()
    it("sends a Chat Completions request with the key attached by the host, and reads the answer", function()
      local v = value([[return llm.chat{model = "openai/gpt-4o-mini", system = "be brief", temperature = 0.5,
        messages = {{role = "user", content = "hello there"}}}]])
      assert.same({content = "mock: hello there", finish_reason = "stop", model = "gpt-4o-mini",
                   provider = "openai", usage = {input = 4, output = 3}, cost = (4 * 0.15 + 3 * 0.60) / 1e6}, v)
      local reqs = received()
      assert.equals(1, #reqs)
      assert.equals("/v1/chat/completions", reqs[1].path)
      assert.equals("Bearer " .. OPENAI_KEY, reqs[1].headers.authorization)
      local body = reqs[1].body
      assert.equals("gpt-4o-mini", body.model)
      assert.equals(0.5, body.temperature)
      assert.same({role = "system", content = "be brief"}, body.messages[1])
      assert.same({role = "user", content = "hello there"}, body.messages[2])
    end)

    it("streams content and reads usage from the stream", function()
      local v = value([[
        local parts = {}
        local r = llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = "one two three"}},
                           stream = function(d) parts[#parts + 1] = d.content end}
        return {parts = parts, content = r.content, usage = r.usage, finish = r.finish_reason}]])
      assert.equals("mock: one two three", table.concat(v.parts))
      assert.is_true(#v.parts >= 4)
      assert.equals("mock: one two three", v.content)
      assert.same({input = 3, output = 4}, v.usage)
      assert.equals("stop", v.finish)
      local body = received()[1].body
      assert.is_true(body.stream)
      assert.is_true(body.stream_options.include_usage)
    end)

    it("assembles parallel tool calls from streamed argument fragments", function()
      local v = value([[
        local fragments = 0
        local r = llm.chat{model = "openai/gpt-4o-mini",
          tools = {{name = "get_weather", description = "weather", parameters = {type = "object",
                    properties = {city = {type = "string"}}}}, {name = "clock"}},
          messages = {{role = "user", content = 'go [tool:get_weather:{"city":"Paris"}] [tool:clock:{"tz":"UTC"}]'}},
          stream = function(d) if d.tool_call then fragments = fragments + 1 end end}
        return {calls = r.tool_calls, finish = r.finish_reason, fragments = fragments}]])
      assert.same({{id = "call_1", name = "get_weather", arguments = {city = "Paris"}},
                   {id = "call_2", name = "clock", arguments = {tz = "UTC"}}}, v.calls)
      assert.equals("tool_calls", v.finish)
      assert.is_true(v.fragments >= 6)
      local tools = received()[1].body.tools
      assert.equals("function", tools[1].type)
      assert.equals("get_weather", tools[1]["function"].name)
    end)

    it("sends tool results back in OpenAI's shape", function()
      local v = value([[
        local msgs = {{role = "user", content = 'find [tool:lookup:{"q":"x"}]'}}
        local first = llm.chat{model = "openai/gpt-4o-mini", messages = msgs}
        msgs[#msgs + 1] = {role = "assistant", tool_calls = first.tool_calls}
        msgs[#msgs + 1] = {role = "tool", tool_call_id = first.tool_calls[1].id, content = "42"}
        return llm.chat{model = "openai/gpt-4o-mini", messages = msgs}.content]])
      assert.equals("mock: tool results: 42", v)
      local sent = received()[2].body.messages
      assert.equals("assistant", sent[2].role)
      assert.equals("lookup", sent[2].tool_calls[1]["function"].name)
      assert.same({q = "x"}, cjson.decode(sent[2].tool_calls[1]["function"].arguments))
      assert.same({role = "tool", tool_call_id = "call_1", content = "42"}, sent[3])
    end)

    it("JSON mode", function()
      local v = value([[return llm.chat{model = "openai/gpt-4o-mini", response_format = "json",
        messages = {{role = "user", content = "say hi"}}}.content]])
      assert.same({echo = "say hi"}, cjson.decode(v))
      assert.same({type = "json_object"}, received()[1].body.response_format)
    end)

    it("embeddings", function()
      local v = value([[local r = llm.embed{model = "openai/text-embedding-3-small", input = {"a b", "a b", "zz"}}
        return {n = #r.vectors, same = r.vectors[1][3] == r.vectors[2][3], provider = r.provider}]])
      assert.same({n = 3, same = true, provider = "openai"}, v)
      assert.equals("/v1/embeddings", received()[1].path)
    end)

    it("streams text with JSON escapes intact: quotes, newlines, accents, astral characters", function()
      local text = 'say "hi"\\n\tthen é and 😀 [chunks:7]'
      local v = value(([[
        local parts = {}
        local r = llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = %q}},
                           stream = function(d) parts[#parts + 1] = d.content end}
        return {streamed = table.concat(parts), content = r.content}]]):format(text))
      local want = "mock: " .. text:gsub(" %[chunks:7%]", "")
      assert.equals(want, v.content)
      assert.equals(want, v.streamed)
    end)

    it("reads whole replies with JSON escapes intact, and tool-call replies through the full decoder", function()
      local text = 'say "hi"\\n\tthen é, \\u00e9 and 😀'
      local v = value(([[
        local a = llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = %q}}}
        local b = llm.chat{model = "openai/gpt-4o-mini", tools = {{name = "calc"}},
                           messages = {{role = "user", content = 'x [tool:calc:{"expr":"1+1"}]'}}}
        return {a = a.content, usage = a.usage, finish = a.finish_reason, calls = b.tool_calls, b = b.content}]])
        :format(text))
      assert.equals("mock: " .. text, v.a)
      assert.equals("stop", v.finish)
      assert.is_true(v.usage.input > 0 and v.usage.output > 0)
      assert.equals(1, #v.calls)
      assert.equals("calc", v.calls[1].name)
      assert.same({expr = "1+1"}, v.calls[1].arguments)
    end)

    it("sends tool_choice only with tools, and max_completion_tokens to reasoning models", function()
      value([[
        llm.chat{model = "openai/gpt-4o-mini", tool_choice = "auto", max_tokens = 50,
                 messages = {{role = "user", content = "a"}}}
        llm.chat{model = "openai/o3-mini", tool_choice = "required", max_tokens = 60, tools = {{name = "t"}},
                 messages = {{role = "user", content = "b"}}}
        return true]])
      local reqs = received()
      assert.is_nil(reqs[1].body.tool_choice)
      assert.equals(50, reqs[1].body.max_tokens)
      assert.equals("required", reqs[2].body.tool_choice)
      assert.equals(60, reqs[2].body.max_completion_tokens)
      assert.is_nil(reqs[2].body.max_tokens)
    end)

    it("works without a key against an OpenAI-compatible local server", function()
      local v = value([[return llm.chat{model = "openai/llama3", messages = {{role = "user", content = "hi"}}}.content]],
                      {OPENAI_API_KEY = false})
      assert.equals("mock: hi", v)
      assert.is_nil(received()[1].headers.authorization)
    end)
  end)

  describe("Anthropic", function()
    it("sends a Messages request with x-api-key and the version, and reads the answer", function()
      local v = value([[return llm.chat{model = "anthropic/claude-3-5-haiku-latest", system = "be brief",
        messages = {{role = "user", content = "hello"}}}]])
      assert.equals("mock: hello", v.content)
      assert.equals("anthropic", v.provider)
      assert.equals("stop", v.finish_reason)
      assert.same({input = 3, output = 2}, v.usage)
      local r = received()[1]
      assert.equals("/v1/messages", r.path)
      assert.equals(ANTHROPIC_KEY, r.headers["x-api-key"])
      assert.equals("2023-06-01", r.headers["anthropic-version"])
      assert.is_nil(r.headers.authorization)
      assert.equals("be brief", r.body.system)
      assert.equals(1024, r.body.max_tokens)
    end)

    it("reads whole replies and streamed text with JSON escapes intact", function()
      local text = 'say "hi"\\n\tthen é and 😀'
      local v = value(([[
        local parts = {}
        local a = llm.chat{model = "anthropic/claude-3-5-haiku-latest", messages = {{role = "user", content = %q}}}
        local b = llm.chat{model = "anthropic/claude-3-5-haiku-latest",
                           messages = {{role = "user", content = %q .. " [chunks:5]"}},
                           stream = function(d) parts[#parts + 1] = d.content end}
        return {a = a.content, usage = a.usage, b = b.content, streamed = table.concat(parts), n = #parts}]])
        :format(text, text))
      assert.equals("mock: " .. text, v.a)
      assert.is_true(v.usage.input > 0 and v.usage.output > 0)
      assert.equals("mock: " .. text, v.b)
      assert.equals("mock: " .. text, v.streamed)
      assert.is_true(v.n >= 5)
    end)

    it("streams text and tool_use input from input_json_delta fragments", function()
      local v = value([[
        local text = {}
        local a = llm.chat{model = "anthropic/claude-3-5-haiku-latest", messages = {{role = "user", content = "a b c"}},
                           stream = function(d) text[#text + 1] = d.content end}
        local b = llm.chat{model = "anthropic/claude-3-5-haiku-latest",
                           tools = {{name = "calc", parameters = {type = "object"}}},
                           messages = {{role = "user", content = 'x [tool:calc:{"expr":"2+2","deep":{"n":[1,2]}}]'}},
                           stream = function() end}
        return {text = table.concat(text), a = a.content, calls = b.tool_calls, finish = b.finish_reason}]])
      assert.equals("mock: a b c", v.text)
      assert.equals("mock: a b c", v.a)
      assert.same({{id = "toolu_1", name = "calc", arguments = {expr = "2+2", deep = {n = {1, 2}}}}}, v.calls)
      assert.equals("tool_calls", v.finish)
    end)

    it("sends tool calls and results as tool_use and tool_result blocks", function()
      local v = value([[
        local msgs = {{role = "user", content = 'find [tool:lookup:{"q":"x"}]'}}
        local first = llm.chat{model = "anthropic/claude-3-5-haiku-latest", messages = msgs}
        msgs[#msgs + 1] = {role = "assistant", tool_calls = first.tool_calls}
        msgs[#msgs + 1] = {role = "tool", tool_call_id = first.tool_calls[1].id, content = "42"}
        return llm.chat{model = "anthropic/claude-3-5-haiku-latest", messages = msgs}.content]])
      assert.equals("mock: tool results: 42", v)
      local sent = received()[2].body.messages
      assert.same({type = "tool_use", id = "toolu_1", name = "lookup", input = {q = "x"}}, sent[2].content[1])
      assert.same({role = "user", content = {{type = "tool_result", tool_use_id = "toolu_1", content = "42"}}}, sent[3])
    end)

    it("tool_choice none keeps the tools, so a conversation with tool_use blocks is accepted", function()
      value([[return llm.chat{model = "anthropic/claude-3-5-haiku-latest", tool_choice = "none",
        tools = {{name = "lookup", parameters = {type = "object", properties = {}}}},
        messages = {{role = "user", content = "q"},
                    {role = "assistant", tool_calls = {{id = "toolu_1", name = "lookup", arguments = {}}}},
                    {role = "tool", tool_call_id = "toolu_1", content = "42"}}}.content]])
      local body = received()[1].body
      assert.equals("lookup", body.tools[1].name)
      assert.same({type = "none"}, body.tool_choice)
    end)

    it("a stream error event is an error, not a short answer", function()
      local v = value([[return {llm.chat{model = "anthropic/claude-3-5-haiku-latest", retry = {attempts = 1},
        messages = {{role = "user", content = "x [stream-error]"}}, stream = function() end}}]])
      assert.is_nil(v[1])
      assert.matches("Overloaded", v[2], 1, true)
    end)
  end)

  describe("failing well", function()
    local fast = "retry = {base_ms = 5, max_ms = 50}"

    it("retries 429 (honouring Retry-After) until it succeeds", function()
      local v = value(([[return llm.chat{model = "openai/gpt-4o-mini", %s,
        messages = {{role = "user", content = "x [fail:2:429:a] [retry-after:0]"}}}.content]]):format(fast))
      assert.equals("mock: x", v)
      assert.equals(3, #received())
    end)

    it("retries 500 and Anthropic's 529", function()
      local v = value(([[
        local a = llm.chat{model = "openai/gpt-4o-mini", %s, messages = {{role = "user", content = "[fail:1:500:b] y"}}}
        local b = llm.chat{model = "anthropic/claude-3-5-haiku-latest", %s,
                           messages = {{role = "user", content = "[fail:1:529:c] z"}}}
        return {a.content, b.content}]]):format(fast, fast))
      assert.same({"mock: y", "mock: z"}, v)
      assert.equals(4, #received())
    end)

    it("reports other 4xx once, with the provider's message", function()
      local v = value(([[return {llm.chat{model = "openai/gpt-4o-mini", %s,
        messages = {{role = "user", content = "[status:400]"}}}}]]):format(fast))
      assert.is_nil(v[1])
      assert.equals("openai: mock error 400 (HTTP 400)", v[2])
      assert.equals(1, #received())
    end)

    it("gives up after the attempts with the last error", function()
      local v = value([[return {llm.chat{model = "openai/gpt-4o-mini", retry = {attempts = 2, base_ms = 5},
        messages = {{role = "user", content = "[status:503]"}}}}]])
      assert.matches("HTTP 503", v[2], 1, true)
      assert.equals(2, #received())
    end)

    it("a stalled stream fails after stall_timeout", function()
      local v = value([[return {llm.chat{model = "openai/gpt-4o-mini", stall_timeout = 300, retry = {attempts = 1},
        messages = {{role = "user", content = "[stall]"}}, stream = function() end}}]])
      assert.is_nil(v[1])
      assert.matches("idle timeout", v[2], 1, true)
    end)

    it("a connection closed mid-stream is an error, not a silently short answer", function()
      local v = value([[
        local got = {}
        local r, err = llm.chat{model = "openai/gpt-4o-mini", retry = {attempts = 3, base_ms = 5},
          messages = {{role = "user", content = "one two three four five [close]"}},
          stream = function(d) got[#got + 1] = d.content end}
        return {r = r, err = err, got = #got}]])
      assert.is_nil(v.r)
      assert.is_true(v.err:find("ended before the response was complete", 1, true) ~= nil
                     or v.err:find("connection closed", 1, true) ~= nil, v.err)
      assert.is_true(v.got >= 1)
      assert.equals(1, #received()) -- not retried after deltas went out
    end)
  end)

  describe("response cache", function()
    it("a hit returns the same answer with no network traffic, also in a later process", function()
      local code = [[
        local r = llm.chat{model = "openai/gpt-4o-mini", cache = true,
          messages = {{role = "user", content = 'cache probe [tool:t:{"a":1}] %s'}}}
        return {calls = r.tool_calls, cached = r.cached == true, cost = r.cost}]]
      local nonce = tostring(os.time()) .. tostring(math.random(1e9))
      local first = value(code:format(nonce))
      local second = value(code:format(nonce))
      assert.same(first.calls, second.calls)
      assert.is_false(first.cached)
      assert.is_true(second.cached)
      assert.equals(0, second.cost)
      assert.equals(1, #received())
      -- a different request is a miss
      value(code:format(nonce .. "x"))
      assert.equals(2, #received())
    end)

    it("an agent with cache = true answers a repeated task from the cache", function()
      local code = [[
        local a = agent{name = "cached", model = "openai/gpt-4o-mini", cache = true}
        local plain = agent{name = "uncached", model = "openai/gpt-4o-mini"}
        local out1 = a:run("agent cache probe %s")
        local out2 = a:run("agent cache probe %s")
        local out3 = plain:run("agent cache probe %s")
        plain:run("agent cache probe %s")
        return {out1, out2, out3}]]
      local nonce = tostring(os.time()) .. tostring(math.random(1e9))
      local v = value((code:gsub("%%s", nonce)))
      assert.equals(v[1], v[2])
      assert.equals(v[1], v[3])
      assert.equals(3, #received()) -- one for the cached agent, two for the plain one
    end)

    it("is opt-in: without cache = true every call goes out", function()
      value([[llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = "same"}}}
              return llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = "same"}}}.content]])
      assert.equals(2, #received())
    end)
  end)

  describe("timeouts", function()
    it("timeout bounds the whole call, retries and their waits included", function()
      local v = value([[return {llm.chat{model = "openai/gpt-4o-mini", timeout = 600,
        retry = {attempts = 5, base_ms = 5, max_ms = 5000},
        messages = {{role = "user", content = "[fail:5:503:slowretry] [retry-after:1]"}}}}]])
      assert.is_nil(v[1])
      assert.is_true(#received() < 5, "it kept retrying past the timeout")
    end)
  end)

  describe("secrets", function()
    it("a key echoed in an escaped form is masked before it reaches the script", function()
      local v = value([[
        local _, e1 = llm.chat{model = "openai/gpt-4o-mini", retry = {attempts = 1},
                               messages = {{role = "user", content = "[status:401] [echo-key]"}}}
        local _, e2 = llm.chat{model = "anthropic/claude-3-5-haiku-latest", retry = {attempts = 1},
                               messages = {{role = "user", content = "[status:401] [echo-key]"}}}
        return {e1, e2}]])
      assert.equals("openai: mock error 401: key " .. ("*"):rep(#OPENAI_KEY) .. " (HTTP 401)", v[1])
      assert.equals("anthropic: mock error 401: key " .. ("*"):rep(#ANTHROPIC_KEY) .. " (HTTP 401)", v[2])
    end)

    it("no script value, error or log line ever holds a key", function()
      local res = H.eval([[
        local seen = {}
        local function keep(v) seen[#seen + 1] = v end
        local a = llm.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = "hello"}},
                           stream = keep}
        local b = llm.chat{model = "anthropic/claude-3-5-haiku-latest", messages = {{role = "user", content = "hi"}}}
        local _, e1 = llm.chat{model = "openai/gpt-4o-mini", retry = {attempts = 1},
                               messages = {{role = "user", content = "[status:401]"}}}
        local _, e2 = llm.chat{model = "anthropic/claude-3-5-haiku-latest", retry = {attempts = 1},
                               messages = {{role = "user", content = "[status:401]"}}}
        return {a, b, e1, e2, seen}]], {env = env({MOONHIVE_LOG = "debug"})})
      assert.equals(0, res.code, H.show(res))
      for _, text in ipairs({res.stdout, res.stderr}) do
        assert.is_nil(text:find(OPENAI_KEY, 1, true))
        assert.is_nil(text:find(ANTHROPIC_KEY, 1, true))
        assert.is_nil(text:find("SECRET", 1, true))
      end
      -- the keys did reach the server
      local reqs = received()
      assert.equals("Bearer " .. OPENAI_KEY, reqs[1].headers.authorization)
      assert.equals(ANTHROPIC_KEY, reqs[2].headers["x-api-key"])
    end)
  end)
end)
