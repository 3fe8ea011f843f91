-- moonhive.providers.mock_script — the mock model's script for `moonhive
-- test` (testkit/moonhive/test.lua writes it): replies for every model call
-- of the process, and a log of what each call received.
--
--   MOONHIVE_MOCK_SCRIPT  a JSON list of replies, taken in order by the calls
--                         of this process, whichever agent makes them:
--                         {content = "text"} | {tool_calls = {{name=, arguments=, id=}}}
--                         | {error = "message"}, each optionally with
--                         agent = "NAME" (only that agent's calls) and
--                         when = "text" (only calls whose system prompt or
--                         last user message contains the text). A call takes
--                         the first unused reply that fits; when none is
--                         left the call fails, naming it.
--   MOONHIVE_MOCK_LOG     each call's request appended as one JSON line:
--                         {call=, model=, agent=, system=, messages=, tools=,
--                          tool_choice=, temperature=, max_tokens=,
--                          response_format=, reply=} (reply: the script's index)
--
-- While MOONHIVE_MOCK_SCRIPT is set every model call goes to the mock
-- (llm.lua), whatever model the agent names. The variables are read through
-- `host.env`, which only the trusted runtime has; the files through
-- `workspace`, confined to their own folders.

local cjson = require "cjson"
local host = require "host"
local workspace = require "workspace"
local C = require "moonhive.providers.common"

local _M = {}

local script        -- the replies, loaded on the first call
local used = {}     -- index -> true once taken
local calls = 0     -- model calls answered so far in this process
local log_ws, log_name

local function split(path)
  local dir, name = path:match("^(.*)/([^/]+)$")
  if not dir then return ".", path end
  return dir == "" and "/" or dir, name
end

function _M.active()
  return host.env("MOONHIVE_MOCK_SCRIPT") ~= nil
end

local function load_script()
  if script then return script end
  local path = host.env("MOONHIVE_MOCK_SCRIPT")
  local dir, name = split(path)
  local ws, err = workspace.open(dir)
  local text
  if ws then
    text, err = ws:read(name)
    ws:close()
  end
  if not text then return nil, ("the mock model's script %s cannot be read (%s)"):format(path, tostring(err)) end
  local ok, list = pcall(cjson.decode, text)
  if not ok or type(list) ~= "table" then
    return nil, ("the mock model's script %s is not a JSON list of replies"):format(path)
  end
  script = list
  return script
end

local function last_user_text(req)
  for i = #req.messages, 1, -1 do
    if req.messages[i].role == "user" then return C.text_of(req.messages[i].content) end
  end
  return ""
end

local function fits(reply, req)
  if type(reply.agent) == "string" and reply.agent ~= req.agent then return false end
  if type(reply.when) == "string" then
    local sys = type(req.system) == "string" and req.system or ""
    return sys:find(reply.when, 1, true) ~= nil or last_user_text(req):find(reply.when, 1, true) ~= nil
  end
  return true
end

local function append_log(entry)
  local path = host.env("MOONHIVE_MOCK_LOG")
  if not path then return end
  if not log_ws then
    local dir
    dir, log_name = split(path)
    log_ws = workspace.open(dir, { max_file = 1 << 30, max_total = math.maxinteger })
    if not log_ws then return end
  end
  local ok, line = pcall(cjson.encode, entry)
  if not ok then line = cjson.encode({ call = entry.call, agent = entry.agent, error = "request not encodable: " .. line }) end
  log_ws:write(log_name, line .. "\n", { append = true })
end

-- The next reply for req: reply | nil, message. Logs the request either way.
-- `given` is the request's own scripted reply (request.mock), which wins.
function _M.next(req, given)
  calls = calls + 1
  local list, err = load_script()
  local index
  if list and not given then
    for i, reply in ipairs(list) do
      if not used[i] and type(reply) == "table" and fits(reply, req) then
        index = i
        break
      end
    end
  end
  append_log({ call = calls, model = req.model, agent = req.agent, system = req.system, messages = req.messages,
               tools = req.tools, tool_choice = req.tool_choice, temperature = req.temperature,
               max_tokens = req.max_tokens, response_format = req.response_format, reply = index })
  if given then return given end
  if not list then return nil, err end
  if not index then
    local left = 0
    for i = 1, #list do if not used[i] then left = left + 1 end end
    local who = type(req.agent) == "string" and (" (agent '%s')"):format(req.agent) or ""
    if left == 0 then
      return nil, ("the mock model's script has no reply left for call %d%s"):format(calls, who)
    end
    return nil, ("the mock model's script has no reply for call %d%s: %d left, none fits (agent=, when=)")
                :format(calls, who, left)
  end
  used[index] = true
  local reply = list[index]
  if reply.tool_calls then
    local out = {}
    for i, tc in ipairs(reply.tool_calls) do
      out[i] = { id = tc.id or ("call_%d_%d"):format(calls, i), name = tc.name, arguments = tc.arguments }
    end
    return { tool_calls = out }
  end
  return reply
end

return _M
