-- moonhive.providers.openai — OpenAI Chat Completions (and OpenAI-compatible
-- servers through OPENAI_BASE_URL): tools and parallel tool calls, JSON mode,
-- streaming with tool-call arguments assembled from fragments, usage in
-- streams, embeddings. The key is attached by C (http's auth = "openai").

local host = require "host"
local retry = require "moonhive.retry"
local C = require "moonhive.providers.common"

local _M = {}

local jsonscan = require "jsonscan"
local picker = jsonscan.picker

-- The fields of an ordinary reply, read in one pass without decoding the
-- whole document (host/mod_jsonscan.c); a reply with tool calls (or anything
-- the picker leaves alone) goes through the full decoder.
local read_reply = picker("choices.1.message.content", "choices.1.message.tool_calls#", "choices.1.finish_reason",
                          "model", "usage#", "usage.prompt_tokens", "usage.completion_tokens")
-- and of a stream chunk that http's sse_text did not take (the finish reason, the usage)
local read_chunk = picker("#", "choices.1.delta.content", "choices.1.delta.tool_calls#", "choices.1.finish_reason",
                          "usage#", "usage.prompt_tokens", "usage.completion_tokens", "error#")

local url_for = C.url_maker("OPENAI_BASE_URL", "https://api.openai.com/v1")
local JSON_HEADERS = { ["Content-Type"] = "application/json" } -- shared: http.request only reads it

local function auth()
  if host.has_key("openai") then return "openai" end
  return nil
end

local function messages_for(req)
  local out = {}
  if req.system then out[#out + 1] = { role = "system", content = req.system } end
  for _, m in ipairs(req.messages) do
    local o = { role = m.role, content = m.content, name = m.name }
    if m.role == "tool" then
      o.tool_call_id = m.tool_call_id
      if type(o.content) ~= "string" then o.content = C.encode(o.content or {}) end
    end
    if type(m.tool_calls) == "table" and #m.tool_calls > 0 then
      o.tool_calls = {}
      for i, tc in ipairs(m.tool_calls) do
        o.tool_calls[i] = { id = tc.id, type = "function", ["function"] = {
          name = tc.name,
          arguments = type(tc.arguments) == "string" and tc.arguments or C.encode(tc.arguments or {}),
        } }
      end
      if o.content == nil then o.content = C.null end
    end
    out[#out + 1] = o
  end
  return out
end

local function tools_for(tools)
  local out = {}
  for i, t in ipairs(tools) do
    out[i] = { type = "function", ["function"] = {
      name = t.name, description = t.description,
      parameters = t.parameters or t.params or { type = "object", properties = {} },
    } }
  end
  return out
end

local function tool_choice_for(choice)
  if type(choice) == "table" and choice.name then
    return { type = "function", ["function"] = { name = choice.name } }
  end
  return choice -- "auto" | "none" | "required" | nil
end

-- Reasoning models (o1, o3, o4-mini, gpt-5...) refuse max_tokens and want
-- max_completion_tokens; other and OpenAI-compatible servers know max_tokens.
local reasoning, n_reasoning = {}, 0
local function reasoning_model(model)
  local r = reasoning[model]
  if r == nil then
    r = model:find("^o%d") ~= nil or model:find("^gpt%-5") ~= nil
    if n_reasoning < 256 then reasoning[model], n_reasoning = r, n_reasoning + 1 end -- any number of names
  end
  return r
end

local function body_for(req, model, stream)
  local body = {
    model = model,
    messages = messages_for(req),
    temperature = req.temperature,
  }
  if reasoning_model(model) then body.max_completion_tokens = req.max_tokens
  else body.max_tokens = req.max_tokens end
  -- tool_choice without tools is refused
  if type(req.tools) == "table" and #req.tools > 0 then
    body.tools = tools_for(req.tools)
    body.tool_choice = tool_choice_for(req.tool_choice)
  end
  if req.response_format == "json" then body.response_format = { type = "json_object" }
  elseif type(req.response_format) == "table" then body.response_format = req.response_format end
  if stream then
    body.stream = true
    body.stream_options = { include_usage = true }
  end
  return C.encode(body)
end

local function request(req, path, body, sse_data, sse_text)
  return C.post(req, url_for(path), JSON_HEADERS, body, auth(), sse_data, sse_text)
end

local function usage_of(u)
  if type(u) ~= "table" then return nil end
  return { input = C.count(u.prompt_tokens), output = C.count(u.completion_tokens) }
end

local function result_of(message, finish, usage, model)
  local res = { content = type(message.content) == "string" and message.content or nil,
                finish_reason = finish, usage = usage, model = model }
  if type(message.tool_calls) == "table" and #message.tool_calls > 0 then
    res.tool_calls = {}
    for i, tc in ipairs(message.tool_calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      res.tool_calls[i] = { id = C.str(tc.id) or ("call_" .. i), name = C.str(fn.name),
                            arguments = C.tool_arguments(fn.arguments) }
    end
  end
  return res
end

local function chat_once(req, model)
  local res, err = request(req, "/chat/completions", body_for(req, model, false))
  if not res then return nil, retry.transport_error(err) end
  if res.status ~= 200 then
    return nil, retry.http_error(res, C.error_message(res.body, "request failed"))
  end
  -- the common reply: text, no tool calls
  local ok, content, ncalls, finish, m, nusage, pin, pout = read_reply(res.body)
  if ok and type(content) == "string" and not (ncalls and ncalls > 0) then
    return { content = content, finish_reason = type(finish) == "string" and finish or nil,
             usage = nusage and { input = C.count(pin), output = C.count(pout) } or nil,
             model = type(m) == "string" and m or model }
  end
  local v = C.decode(res.body)
  local choice = type(v) == "table" and type(v.choices) == "table" and v.choices[1]
  if type(choice) ~= "table" or type(choice.message) ~= "table" then
    return nil, { message = "malformed response: no choices", retryable = false }
  end
  return result_of(choice.message, type(choice.finish_reason) == "string" and choice.finish_reason or nil,
                   usage_of(v.usage), type(v.model) == "string" and v.model or model)
end

local function chat_stream(req, model, emit)
  local parts, calls, finish, usage, done, emitted, failure = {}, {}, nil, nil, false, false, nil
  -- The common chunk, one content delta with nothing finished yet, never
  -- reaches Lua: http finds its text in C, appends it to `parts` and hands it
  -- to emit (three searches per chunk; a full walk of each cost more).
  local common = { after = '"delta":{"content":"', needed = '"finish_reason":null', refused = '"tool_calls"',
                   into = parts, call = emit }
  local res, err = request(req, "/chat/completions", body_for(req, model, true),
    function(data)
      if data == "[DONE]" then done = true return end
      local ok, object, content, ncalls, fin, nusage, pin, pout, nerr = read_chunk(data)
      if ok and object and not ncalls and not nerr then
        if nusage then usage = { input = C.count(pin), output = C.count(pout) } end
        if type(content) == "string" and content ~= "" then
          parts[#parts + 1] = content
          emitted = true
          if emit(content) == false then return false end
        end
        if type(fin) == "string" then finish = fin end
        return
      end
      local chunk = C.decode(data)
      if type(chunk) ~= "table" then failure = "malformed stream event" return false end
      if type(chunk.error) == "table" then failure = tostring(chunk.error.message) return false end
      if type(chunk.usage) == "table" then usage = usage_of(chunk.usage) end
      local choice = type(chunk.choices) == "table" and chunk.choices[1]
      if type(choice) ~= "table" then return end
      local d = type(choice.delta) == "table" and choice.delta or {}
      if type(d.content) == "string" and d.content ~= "" then
        parts[#parts + 1] = d.content
        emitted = true
        if emit(d.content) == false then return false end
      end
      if type(d.tool_calls) == "table" then
        for _, tc in ipairs(d.tool_calls) do
          local i = (tonumber(tc.index) or 0) + 1
          local acc = calls[i] or { args = {} }
          calls[i] = acc
          if type(tc.id) == "string" then acc.id = tc.id end
          local fn = type(tc["function"]) == "table" and tc["function"] or {}
          if type(fn.name) == "string" then acc.name = fn.name end
          if type(fn.arguments) == "string" and fn.arguments ~= "" then
            acc.args[#acc.args + 1] = fn.arguments
            emitted = true
            if emit(i, acc.id, acc.name, fn.arguments) == false then
              return false
            end
          end
        end
      end
      if type(choice.finish_reason) == "string" then finish = choice.finish_reason end
    end, common)
  emitted = emitted or #parts > 0
  local broken = retry.stream_error(res, err, emitted, C.error_message)
  if broken then return nil, broken end
  if failure then return nil, { message = failure, retryable = false } end
  if not done and not finish then
    return nil, { message = "the stream ended before the response was complete", retryable = not emitted }
  end
  local message = { content = #parts > 0 and table.concat(parts) or nil, tool_calls = {} }
  for i, acc in ipairs(calls) do
    message.tool_calls[i] = { id = acc.id, ["function"] = { name = acc.name, arguments = table.concat(acc.args) } }
  end
  return result_of(message, finish, usage, model)
end

function _M.chat(req, model, emit)
  if req.stream_deltas then return chat_stream(req, model, emit) end
  return chat_once(req, model)
end

function _M.embed(req, model)
  local input = req.input
  local res, err = request(req, "/embeddings", C.encode({ model = model, input = input }))
  if not res then return nil, retry.transport_error(err) end
  if res.status ~= 200 then return nil, retry.http_error(res, C.error_message(res.body, "request failed")) end
  local v = C.decode(res.body)
  if type(v) ~= "table" or type(v.data) ~= "table" then
    return nil, { message = "malformed embeddings response", retryable = false }
  end
  local vectors = {}
  for i, d in ipairs(v.data) do vectors[(tonumber(d.index) or (i - 1)) + 1] = C.strip_nulls(d.embedding) end
  local u = type(v.usage) == "table" and v.usage or {}
  return { vectors = vectors, usage = { input = C.count(u.prompt_tokens), output = 0 } }
end

return _M
