-- moonhive.service.chat_api — POST /v1/chat/completions, OpenAI-compatible,
-- so any OpenAI client can talk to agents and workflows: the model is
-- "agent:NAME" or "workflow:NAME". Each request is a recorded run (its id is
-- in the completion's id, "chatcmpl-RUN_ID").
--
-- The conversation becomes the run's input: the last user message as it is
-- when it is the only message; otherwise a transcript of the earlier
-- messages ("[system] ...", "[user] ...", "[assistant] ...") followed by it.
-- stream = true answers Server-Sent Events of chat.completion.chunk objects:
-- an agent's model tokens as they come, then (if the answer was not the
-- tokens streamed) the answer, a last chunk with finish_reason, the usage
-- when stream_options.include_usage, and "data: [DONE]". Errors are JSON
-- {"error": {"message", "type", "status"}} as OpenAI clients expect.

local cjson = require "cjson"
local launcher = require "moonhive.service.launcher"
local runs = require "moonhive.runs"

local _M = {}

local JSON = { ["Content-Type"] = "application/json" }
local TYPES = { [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
                [404] = "not_found_error", [409] = "invalid_request_error", [500] = "server_error" }

local function fail(status, message)
  return status, JSON, cjson.encode({ error = { status = status, message = message,
                                                type = TYPES[status] or "server_error" } }) .. "\n"
end

-- The text of a message's content: a string, or OpenAI's list of parts.
local function text_of(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return nil end
  local out = {}
  for _, part in ipairs(content) do
    if type(part) == "table" and part.type == "text" and type(part.text) == "string" then out[#out + 1] = part.text end
  end
  return table.concat(out, "\n")
end

-- The run's input from the messages, or nil and why not.
local function input_of(messages)
  if type(messages) ~= "table" or #messages == 0 then return nil, "'messages' must be a non-empty list" end
  local lines, last = {}, nil
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then return nil, ("messages[%d] needs a role"):format(i - 1) end
    local text = text_of(m.content)
    if text == nil and m.content ~= nil and m.content ~= cjson.null then
      return nil, ("messages[%d].content must be a string or a list of text parts"):format(i - 1)
    end
    if i == #messages then
      if m.role ~= "user" then return nil, "the last message must be the user's" end
      last = text or ""
    else
      lines[#lines + 1] = ("[%s] %s"):format(m.role, text or "")
    end
  end
  if #lines == 0 then return last end
  return "Conversation so far:\n" .. table.concat(lines, "\n") .. "\n\nNow answer this:\n" .. last
end

-- What the model field names: kind and name, or nil.
local function target_of(model)
  if type(model) ~= "string" then return nil end
  local kind, name = model:match("^(%a+):(.+)$")
  if kind == "agent" or kind == "workflow" then return kind, name end
  return nil
end

-- The answer's text and usage from a finished run's report.
local function answer_of(report_text)
  local ok, report = pcall(cjson.decode, report_text)
  if not ok or type(report) ~= "table" then return nil, "the run's report is not JSON" end
  if report.status ~= "succeeded" then return nil, report.error or ("the run " .. tostring(report.status)) end
  local out = report.output
  if type(out) ~= "string" then out = cjson.encode(out) end
  local usage = report.usage
  if type(usage) ~= "table" then -- a workflow: the run's totals (its steps' agents)
    local run = runs.show(report.run_id)
    usage = { input = run and run.tokens_in or 0, output = run and run.tokens_out or 0 }
  end
  return out, usage
end

local function usage_json(u)
  local i, o = math.floor(tonumber(u and u.input) or 0), math.floor(tonumber(u and u.output) or 0)
  return { prompt_tokens = i, completion_tokens = o, total_tokens = i + o }
end

local function chunk(base, delta, finish)
  return ("data: %s\n\n"):format(cjson.encode({
    id = base.id, object = "chat.completion.chunk", created = base.created, model = base.model,
    choices = { { index = 0, delta = delta, finish_reason = finish or cjson.null } } }))
end

-- The streamed answer: tokens as they come, then the end.
local function stream(res, h, base, include_usage)
  if not res:stream(200, { ["Content-Type"] = "text/event-stream", ["Cache-Control"] = "no-cache",
                           ["X-Accel-Buffering"] = "no" }) then
    return
  end
  if not res:write(chunk(base, { role = "assistant", content = "" })) then return end
  local streamed = {}
  while true do
    local text = h:tokens()
    if not text then break end
    streamed[#streamed + 1] = text
    if not res:write(chunk(base, { content = text })) then return end -- the client left; the run goes on, recorded
  end
  local report, err = h:wait()
  local answer, usage
  if report then answer, usage = answer_of(report) end
  if not answer then
    res:write(("data: %s\n\n"):format(cjson.encode({ error = { message = usage or err, type = "server_error" } })))
    res:write("data: [DONE]\n\n")
    return
  end
  local sent = table.concat(streamed)
  if sent == "" or sent:sub(-#answer) ~= answer then
    if not res:write(chunk(base, { content = answer })) then return end
  end
  if not res:write(chunk(base, {}, "stop")) then return end
  if include_usage then
    local last = cjson.encode({ id = base.id, object = "chat.completion.chunk", created = base.created,
                                model = base.model, usage = usage_json(usage) })
    res:write(("data: %s\n\n"):format((last:gsub("^{", '{"choices":[],')))) -- an empty list, as OpenAI sends
  end
  res:write("data: [DONE]\n\n")
end

function _M.register(svc)
  svc.router:add("POST", "/v1/chat/completions", function(req, res)
    local ok, body = pcall(cjson.decode, req.body)
    if not ok or type(body) ~= "table" then return fail(400, "the body must be a JSON object (a chat completion request)") end
    local kind, name = target_of(body.model)
    if not kind then return fail(400, "'model' must be \"agent:NAME\" or \"workflow:NAME\"") end
    local input, why = input_of(body.messages)
    if not input then return fail(400, why) end
    local streaming = body.stream == true
    local h, status, err = launcher.start(kind, name, input, { stream = streaming })
    if not h then return fail(status, err) end
    local base = { id = "chatcmpl-" .. h:id(), created = math.floor(time.now()), model = body.model }
    if streaming then
      local include = type(body.stream_options) == "table" and body.stream_options.include_usage == true
      return stream(res, h, base, include)
    end
    local report, e = h:wait()
    local answer, usage
    if report then answer, usage = answer_of(report) end
    if not answer then return fail(500, ("%s %s failed: %s"):format(kind, name, tostring(usage or e))) end
    return 200, JSON, cjson.encode({
      id = base.id, object = "chat.completion", created = base.created, model = base.model,
      choices = { { index = 0, message = { role = "assistant", content = answer }, finish_reason = "stop" } },
      usage = usage_json(usage) }) .. "\n"
  end)
end

return _M
