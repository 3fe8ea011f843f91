-- tool — tools agents can call. Also a global: `tool{...}`.
--
--   local t = tool{
--     name = "get_weather",                  -- letters, digits, _ and - (what the model calls)
--     description = "Current weather for a city",
--     params = {type = "object", properties = {city = {type = "string"}}, required = {"city"}},
--     timeout = 5000,                        -- ms (default 30000)
--     run = function(args, ctx) return {temp = 21} end,
--   }
--   local ok, result = tool.invoke(t, args, ctx)
--
-- invoke validates args against params (stdlib/schema.lua) before the call
-- and runs it as a task bounded by the timeout: ok is false and result a
-- message when the arguments are invalid, the tool raised, or it timed out.
-- A table result is sent to the model as JSON, anything else as text.

local schema = require "schema"

local M = {}
local Tool = {}
Tool.__index = Tool
M.Tool = Tool

local DEFAULT_TIMEOUT = 30000

local function fail(msg) error("tool: " .. msg, 3) end

function M.new(def)
  if type(def) ~= "table" then fail("expected a table {name=, description=, params=, run=}") end
  if type(def.name) ~= "string" or not def.name:match("^[%a_][%w_%-]*$") or #def.name > 64 then
    fail("'name' must be letters, digits, '_' or '-' (at most 64), starting with a letter")
  end
  if def.description ~= nil and type(def.description) ~= "string" then fail(def.name .. ": 'description' must be a string") end
  if type(def.run) ~= "function" then fail(def.name .. ": 'run' must be a function(args, ctx)") end
  local params = def.params or def.parameters or { type = "object", properties = {} }
  local ok, err = schema.check(params)
  if not ok then fail(def.name .. ": 'params' is not a usable JSON Schema: " .. err) end
  local timeout = def.timeout or DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or timeout <= 0 then fail(def.name .. ": 'timeout' must be milliseconds > 0") end
  return setmetatable({ name = def.name, description = def.description or "", params = params,
                        timeout = timeout, run = def.run }, Tool)
end

function M.is_tool(v) return getmetatable(v) == Tool end

-- What the model is told about the tool.
function M.spec(t)
  return { name = t.name, description = t.description, parameters = t.params }
end

-- Runs fn(...) as a task; true and its result, or false and a message
-- (its error, or a timeout after ms).
local function bounded(ms, what, fn, ...)
  local worker = task.spawn(fn, ...)
  local timed_out = false
  local timer = task.spawn(function()
    sleep(ms)
    timed_out = true
    worker:cancel()
  end)
  local ok, result = worker:wait()
  timer:cancel()
  if timed_out then return false, ("%s timed out after %d ms"):format(what, ms) end
  if not ok then return false, tostring(result) end
  return true, result
end

-- Also for the workflow engine's step timeouts: ok, result of fn(...) run
-- as a task, or false, "WHAT timed out after MS ms".
M.bounded = bounded

function M.invoke(t, args, ctx)
  if type(args) ~= "table" then return false, "arguments must be a JSON object" end
  if args._raw ~= nil then return false, "the arguments are not valid JSON: " .. tostring(args._raw) end
  local valid, errors = schema.validate(args, t.params)
  if not valid then return false, schema.describe_errors(errors) end
  return bounded(t.timeout, ("tool '%s'"):format(t.name), t.run, args, ctx)
end

-- The text a tool's outcome is sent to the model as.
function M.result_text(ok, result)
  if not ok then return "error: " .. tostring(result) end
  if type(result) == "table" then
    local good, text = pcall(json.encode, result)
    return good and text or tostring(result)
  end
  if result == nil then return "" end
  return tostring(result)
end

return setmetatable(M, { __call = function(_, def) return M.new(def) end })
