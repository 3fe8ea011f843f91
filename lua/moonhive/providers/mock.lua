-- moonhive.providers.mock — the offline, deterministic model ("mock/NAME").
--
-- It answers from, in order:
--   1. request.mock, a list of scripted replies: the n-th reply answers a
--      conversation that already holds n-1 assistant messages, so a
--      tool-calling loop can be scripted turn by turn. A reply is
--      {content = "..."} or {tool_calls = {{name = "...", arguments = {...}}}}
--      or {error = "message"};
--   2. directives in the last user message, the same ones the mock LLM
--      server (tests/tools/mockllm.c) reads: [reply:TEXT], [tool:NAME:{json}]
--      — tool directives only until a tool round is over (the conversation
--      ends with tool results) and not with tool_choice "none";
--   3. after a tool round "mock: tool results: <r1> | <r2>...";
--   4. otherwise "mock: <last user message>".
-- Under `moonhive test` (MOONHIVE_MOCK_SCRIPT set) the test's script
-- (mock_script.lua) replaces 2-4: it answers every call or fails it.
-- Usage counts words; cost is 0. Streaming hands out one word at a time.

local C = require "moonhive.providers.common"
local mock_script = require "moonhive.providers.mock_script"

local _M = {}

local function words(s)
  local n = 0
  for _ in tostring(s or ""):gmatch("%S+") do n = n + 1 end
  return n
end

local function last_user_text(req)
  for i = #req.messages, 1, -1 do
    local m = req.messages[i]
    if m.role == "user" then return C.text_of(m.content) end
  end
  return ""
end

-- [tool:NAME:{json}] with braces balanced; returns name, json text, end index.
local function next_tool(text, from)
  local s, e, name = text:find("%[tool:([%w_%-%.]+):", from)
  if not s then return nil end
  local depth, i = 0, e + 1
  if text:sub(i, i) ~= "{" then return nil end
  repeat
    local c = text:sub(i, i)
    if c == "{" then depth = depth + 1 elseif c == "}" then depth = depth - 1 end
    i = i + 1
  until depth == 0 or i > #text
  return name, text:sub(e + 1, i - 1), i
end

-- The texts of the tool results the conversation ends with (a tool round
-- just finished), or nil.
local function trailing_tool_results(req)
  local out = {}
  for i = #req.messages, 1, -1 do
    local m = req.messages[i]
    if m.role ~= "tool" then break end
    table.insert(out, 1, C.text_of(m.content))
  end
  return #out > 0 and out or nil
end

local function from_directives(text, results, tools_off)
  local calls, pos = {}, 1
  while not results and not tools_off do
    local name, json, stop = next_tool(text, pos)
    if not name then break end
    calls[#calls + 1] = { id = "call_" .. (#calls + 1), name = name, arguments = C.tool_arguments(json) }
    pos = stop
  end
  if #calls > 0 then return { tool_calls = calls } end
  local reply = text:match("%[reply:([^%]]*)%]")
  if reply then return { content = reply } end
  if results then return { content = "mock: tool results: " .. table.concat(results, " | ") } end
  local prompt = text:gsub("%[[%w%-]+:?[^%]]*%]", ""):gsub("^%s+", ""):gsub("%s+$", "")
  return { content = "mock: " .. prompt }
end

local function scripted(req)
  if type(req.mock) ~= "table" or #req.mock == 0 then return nil end
  local turns = 0
  for _, m in ipairs(req.messages) do
    if m.role == "assistant" then turns = turns + 1 end
  end
  return req.mock[math.min(turns + 1, #req.mock)]
end

function _M.chat(req, model, emit)
  local reply = scripted(req)
  if mock_script.active() then
    local err
    reply, err = mock_script.next(req, reply)
    if not reply then return nil, { message = err, retryable = false } end
  end
  reply = reply or from_directives(last_user_text(req), trailing_tool_results(req), req.tool_choice == "none")
  if reply.error then return nil, { message = tostring(reply.error), retryable = false } end
  local input = words(req.system)
  for _, m in ipairs(req.messages) do input = input + words(C.text_of(m.content)) end
  local res = { model = model, usage = { input = input, output = 0 } }
  if reply.tool_calls then
    res.tool_calls = {}
    for i, tc in ipairs(reply.tool_calls) do
      res.tool_calls[i] = { id = tc.id or ("call_" .. i), name = tc.name,
                            arguments = C.tool_arguments(tc.arguments) }
      res.usage.output = res.usage.output + 1
      if req.stream_deltas then
        emit(i, res.tool_calls[i].id, tc.name, C.encode(res.tool_calls[i].arguments))
      end
    end
    res.finish_reason = "tool_calls"
    return res
  end
  res.content = tostring(reply.content or "")
  res.usage.output = words(res.content)
  res.finish_reason = "stop"
  if req.stream_deltas then
    for piece in res.content:gmatch("%S+%s*") do
      if emit(piece) == false then break end
    end
  end
  return res
end

function _M.embed(req, model)
  local inputs = type(req.input) == "table" and req.input or { req.input }
  local vectors = {}
  for i, text in ipairs(inputs) do
    -- 8 buckets of character-bigram counts, normalised: equal texts, equal vectors
    local v = { 0, 0, 0, 0, 0, 0, 0, 0 }
    local s = tostring(text):lower()
    for j = 1, #s - 1 do
      local x, y = s:byte(j), s:byte(j + 1)
      local b = ((x * 73 + y * 151) ~ (x * y)) % 8 + 1
      v[b] = v[b] + 1
    end
    local norm = 0
    for _, x in ipairs(v) do norm = norm + x * x end
    norm = math.sqrt(norm)
    if norm > 0 then for j = 1, 8 do v[j] = v[j] / norm end end
    vectors[i] = v
  end
  return { vectors = vectors, usage = { input = 0, output = 0 }, model = model }
end

return _M
