-- moonhive.providers.anthropic — the Anthropic Messages API: system, tools
-- (tool_use / tool_result blocks), streaming events (message_start,
-- content_block_start/delta/stop with text_delta and input_json_delta,
-- message_delta, message_stop, ping, error). The key is attached by C
-- (http's auth = "anthropic").

local host = require "host"
local retry = require "moonhive.retry"
local C = require "moonhive.providers.common"

local _M = {}

local VERSION = "2023-06-01"

local url_for = C.url_maker("ANTHROPIC_BASE_URL", "https://api.anthropic.com")
-- shared: http.request only reads it
local HEADERS = { ["Content-Type"] = "application/json", ["anthropic-version"] = VERSION }

-- The fields of an ordinary reply (one text block) and of a stream event,
-- read in one pass without decoding the whole document
-- (host/mod_jsonscan.c); anything else goes through the full decoder.
local picker = require("jsonscan").picker
local read_reply = picker("content#", "content.1.type", "content.1.text", "stop_reason", "model",
                          "usage.input_tokens", "usage.output_tokens")
local read_event = picker("type", "index", "delta.type", "delta.text")

local stop_reasons = { end_turn = "stop", tool_use = "tool_calls", max_tokens = "length", stop_sequence = "stop" }

-- Our messages to Anthropic's: tool results become user tool_result blocks
-- (consecutive ones merged), assistant tool calls become tool_use blocks.
local function messages_for(req)
  local out = {}
  local function push(role, blocks)
    local last = out[#out]
    if last and last.role == role and type(last.content) == "table" then
      for _, b in ipairs(blocks) do last.content[#last.content + 1] = b end
    else
      out[#out + 1] = { role = role, content = blocks }
    end
  end
  for _, m in ipairs(req.messages) do
    if m.role == "system" then
      -- folded into `system` below
    elseif m.role == "tool" then
      push("user", { { type = "tool_result", tool_use_id = m.tool_call_id,
                       content = type(m.content) == "string" and m.content or C.encode(m.content or {}) } })
    elseif m.role == "assistant" and type(m.tool_calls) == "table" and #m.tool_calls > 0 then
      local blocks = {}
      local text = C.text_of(m.content)
      if text ~= "" then blocks[#blocks + 1] = { type = "text", text = text } end
      for _, tc in ipairs(m.tool_calls) do
        local input = tc.arguments
        if type(input) == "string" then input = C.tool_arguments(input) end
        if next(input or {}) == nil then input = C.null end
        blocks[#blocks + 1] = { type = "tool_use", id = tc.id, name = tc.name, input = input or C.null }
      end
      push("assistant", blocks)
    else
      push(m.role, { { type = "text", text = C.text_of(m.content) } })
    end
  end
  -- an empty tool input must be an object: cjson writes {} for empty tables
  for _, msg in ipairs(out) do
    for _, b in ipairs(msg.content) do
      if b.type == "tool_use" and b.input == C.null then b.input = {} end
    end
  end
  return out
end

local function system_for(req)
  local parts = {}
  if type(req.system) == "string" then parts[#parts + 1] = req.system end
  for _, m in ipairs(req.messages) do
    if m.role == "system" then parts[#parts + 1] = C.text_of(m.content) end
  end
  if #parts == 0 then return nil end
  return table.concat(parts, "\n\n")
end

local function body_for(req, model, stream)
  local body = {
    model = model,
    system = system_for(req),
    messages = messages_for(req),
    max_tokens = req.max_tokens or 1024,
    temperature = req.temperature,
    stream = stream or nil,
  }
  -- with "none" the tools are still sent: a conversation holding tool_use
  -- blocks is refused without them
  if type(req.tools) == "table" and #req.tools > 0 then
    body.tools = {}
    for i, t in ipairs(req.tools) do
      body.tools[i] = { name = t.name, description = t.description,
                        input_schema = t.parameters or t.params or { type = "object", properties = {} } }
    end
    local choice = req.tool_choice
    if choice == "required" then body.tool_choice = { type = "any" }
    elseif type(choice) == "table" and choice.name then body.tool_choice = { type = "tool", name = choice.name }
    elseif choice == "auto" then body.tool_choice = { type = "auto" }
    elseif choice == "none" then body.tool_choice = { type = "none" } end
  end
  return C.encode(body)
end

local function request(req, body, sse_data)
  return C.post(req, url_for("/v1/messages"), HEADERS, body, host.has_key("anthropic") and "anthropic" or nil, sse_data)
end

local function result_of(blocks, stop_reason, usage, model)
  local texts, calls = {}, {}
  for _, b in ipairs(blocks) do
    if b.type == "text" and type(b.text) == "string" then texts[#texts + 1] = b.text
    elseif b.type == "tool_use" then
      calls[#calls + 1] = { id = C.str(b.id) or ("toolu_" .. (#calls + 1)), name = C.str(b.name),
                            arguments = C.tool_arguments(b.input) }
    end
  end
  return {
    content = #texts > 0 and table.concat(texts) or nil,
    tool_calls = #calls > 0 and calls or nil,
    finish_reason = stop_reasons[stop_reason] or stop_reason,
    usage = usage,
    model = model,
  }
end

local function chat_once(req, model)
  local res, err = request(req, body_for(req, model, false))
  if not res then return nil, retry.transport_error(err) end
  if res.status ~= 200 then return nil, retry.http_error(res, C.error_message(res.body, "request failed")) end
  -- the common reply: one text block
  local ok, nblocks, btype, text, stop, m, uin, uout = read_reply(res.body)
  if ok and nblocks == 1 and btype == "text" and type(text) == "string" then
    return { content = text, finish_reason = stop_reasons[stop] or (type(stop) == "string" and stop or nil),
             usage = { input = C.count(uin), output = C.count(uout) },
             model = type(m) == "string" and m or model }
  end
  local v = C.decode(res.body)
  if type(v) ~= "table" or type(v.content) ~= "table" then
    return nil, { message = "malformed response: no content", retryable = false }
  end
  local u = type(v.usage) == "table" and v.usage or {}
  return result_of(v.content, v.stop_reason, { input = C.count(u.input_tokens), output = C.count(u.output_tokens) },
                   type(v.model) == "string" and v.model or model)
end

local function chat_stream(req, model, emit)
  local blocks, json_parts = {}, {}
  local usage, stop_reason = { input = 0, output = 0 }, nil
  local done, emitted, failure = false, false, nil
  local res, err = request(req, body_for(req, model, true),
    function(data, event)
      -- the common event: a text delta for a block already started
      if event == "content_block_delta" then
        local ok, t, i, dtype, text = read_event(data)
        local b = ok and t == "content_block_delta" and dtype == "text_delta" and type(text) == "string"
                  and math.type(i) == "integer" and blocks[i + 1]
        if b then
          b.text[#b.text + 1] = text
          emitted = true
          if emit(text) == false then return false end
          return
        end
      end
      local v = C.decode(data)
      if type(v) ~= "table" then failure = { message = "malformed stream event", retryable = false } return false end
      local t = v.type
      if t == "message_start" and type(v.message) == "table" then
        local u = type(v.message.usage) == "table" and v.message.usage or {}
        usage.input = C.count(u.input_tokens)
        usage.output = C.count(u.output_tokens)
      elseif t == "content_block_start" and type(v.content_block) == "table" then
        local i = (tonumber(v.index) or 0) + 1
        blocks[i] = { type = C.str(v.content_block.type), id = C.str(v.content_block.id),
                      name = C.str(v.content_block.name), text = {} }
        json_parts[i] = {}
      elseif t == "content_block_delta" and type(v.delta) == "table" then
        local i = (tonumber(v.index) or 0) + 1
        local b = blocks[i]
        if not b then failure = { message = "stream delta for an unknown block", retryable = false } return false end
        if v.delta.type == "text_delta" and type(v.delta.text) == "string" then
          b.text[#b.text + 1] = v.delta.text
          emitted = true
          if emit(v.delta.text) == false then return false end
        elseif v.delta.type == "input_json_delta" and type(v.delta.partial_json) == "string" then
          json_parts[i][#json_parts[i] + 1] = v.delta.partial_json
          emitted = true
          if emit(i, b.id, b.name, v.delta.partial_json) == false then
            return false
          end
        end
      elseif t == "message_delta" then
        if type(v.delta) == "table" and type(v.delta.stop_reason) == "string" then stop_reason = v.delta.stop_reason end
        if type(v.usage) == "table" and v.usage.output_tokens then usage.output = C.count(v.usage.output_tokens) end
      elseif t == "message_stop" then
        done = true
      elseif t == "error" then
        local e = type(v.error) == "table" and v.error or {}
        failure = { message = tostring(e.message or "stream error"),
                    retryable = (e.type == "overloaded_error" or e.type == "rate_limit_error" or e.type == "api_error")
                                and not emitted }
        return false
      end
    end)
  if failure then return nil, failure end
  local broken = retry.stream_error(res, err, emitted, C.error_message)
  if broken then return nil, broken end
  if not done then
    return nil, { message = "the stream ended before the response was complete", retryable = not emitted }
  end
  local final = {}
  for i, b in ipairs(blocks) do
    if b.type == "tool_use" then
      final[#final + 1] = { type = "tool_use", id = b.id, name = b.name, input = table.concat(json_parts[i]) }
    else
      final[#final + 1] = { type = "text", text = table.concat(b.text) }
    end
  end
  return result_of(final, stop_reason, usage, model)
end

function _M.chat(req, model, emit)
  if req.stream_deltas then return chat_stream(req, model, emit) end
  return chat_once(req, model)
end

return _M
