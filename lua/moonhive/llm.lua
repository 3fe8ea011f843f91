-- moonhive.llm — model calls on behalf of sandboxed scripts (trusted runtime).
--
-- Entry points, called by host/mod_llm.c as runs of the runtime state:
--   chat(request, emit) -> result | nil, message
--   embed(request, emit) -> {vectors = {...}, usage=, model=, provider=} | nil, message
-- `emit(text)` hands a streamed piece of content to the script, and
-- `emit(index, id, name, fragment)` a piece of a tool call's arguments (the
-- script sees {content = text} and {tool_call = {index=, id=, name=,
-- arguments = fragment}}); emit returns false once the script is gone, and
-- waits while the script is more than 1 MiB behind.
--
-- A model is named "provider/model" ("openai/gpt-4o-mini",
-- "anthropic/claude-3-5-haiku-latest", "mock/default") or by an alias from
-- the config file (moonhive.lua: aliases = {fast = "openai/gpt-4o-mini"}).
-- Without one: MOONHIVE_MODEL, else the config file's `model`, else OpenAI
-- when its key is set, else Anthropic when its key is set, else mock/default
-- (with a one-line notice). Keys never enter Lua:
-- providers ask http for `auth = "openai"` and C attaches the key.
-- Every chat call is counted for GET /metrics (moonhive.tally), and recorded
-- in the caller's run when it is part of one.

local host = require "host"
local retry = require "moonhive.retry"
local pricing = require "moonhive.pricing"
local cache = require "moonhive.cache"
local runs = require "moonhive.runs"
local tally = require "moonhive.tally"

local _M = {}

local providers = {
  openai = require "moonhive.providers.openai",
  anthropic = require "moonhive.providers.anthropic",
  mock = require "moonhive.providers.mock",
}

local warned_mock = false

-- At most MOONHIVE_LLM_CONCURRENCY calls (default 32) to a provider at once;
-- the others wait their turn. A permit belongs to the call's run, so a
-- cancelled call gives it back.
local gates = {}
local function gate(provider)
  local g = gates[provider]
  if not g then
    g = task.semaphore(math.max(1, math.floor(tonumber(host.env("MOONHIVE_LLM_CONCURRENCY")) or 32)))
    gates[provider] = g
  end
  return g
end

local loaded_config
local resolve

-- The project's configuration (moonhive.lua), read and applied once (prices);
-- a broken file is reported once and counts as no configuration, rather than
-- being read and evaluated again on every call.
local function config()
  if loaded_config then return loaded_config end
  local c, err = host.config()
  if not c then
    log.error("moonhive.lua: " .. tostring(err))
    c = {}
  end
  for name, p in pairs(type(c.prices) == "table" and c.prices or {}) do
    if type(p) == "table" then pricing.set(name, tonumber(p[1] or p.input) or 0, tonumber(p[2] or p.output) or 0) end
  end
  loaded_config = c
  return c
end

-- The provider and model for a request, worked out once per name (the
-- environment, the keys and the config file are read once per process).
local resolved, n_resolved = {}, 0
function _M.resolve_model(name)
  local r = resolved[name or false]
  if not r then
    r = { resolve(name) }
    if n_resolved < 256 then -- scripts may name any number of models
      resolved[name or false], n_resolved = r, n_resolved + 1
    end
  end
  return r[1], r[2], r[3]
end

function resolve(name)
  -- under `moonhive test` the scripted mock answers every call (providers/mock_script.lua)
  if host.env("MOONHIVE_MOCK_SCRIPT") then return providers.mock, "test", "mock" end
  local c = config()
  name = name or host.env("MOONHIVE_MODEL") or c.model
  local aliases = type(c.aliases) == "table" and c.aliases or {}
  if type(name) == "string" and type(aliases[name]) == "string" then name = aliases[name] end
  if not name then
    if host.has_key("openai") then name = "openai/gpt-4o-mini"
    elseif host.has_key("anthropic") then name = "anthropic/claude-3-5-haiku-latest"
    else
      if not warned_mock then
        warned_mock = true
        log.warn("no model named and no provider key set: using mock/default (set MOONHIVE_MODEL or OPENAI_API_KEY)")
      end
      name = "mock/default"
    end
  end
  local provider, model = name:match("^([%w_-]+)/(.+)$")
  if not provider then
    return nil, ("model '%s' must be written provider/model (openai/..., anthropic/..., mock/...)"):format(name)
  end
  if not providers[provider] then
    return nil, ("unknown provider '%s' in model '%s' (openai, anthropic or mock)"):format(provider, name)
  end
  return providers[provider], model, provider
end

local function check_request(req)
  if type(req.messages) ~= "table" or #req.messages == 0 then
    return "llm.chat: 'messages' must be a non-empty list of {role=, content=}"
  end
  for i, m in ipairs(req.messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      return ("llm.chat: messages[%d] needs a role"):format(i)
    end
  end
  if req.tools ~= nil and type(req.tools) ~= "table" then return "llm.chat: 'tools' must be a list" end
  return nil
end

-- One event in the caller's recorded run (if it is part of one) per call.
local function record(caller, req, pname, model, started, res, err)
  if not (caller and caller.run_id) then return end
  local data = { model = pname and (pname .. "/" .. tostring(model)) or req.model,
                 ms = math.floor(time.monotonic() - started) }
  if type(req.messages) == "table" then data.system, data.messages, data.omitted = runs.prompt(req) end
  if res then
    data.usage, data.cost, data.finish_reason, data.cached = res.usage, res.cost, res.finish_reason, res.cached
    data.tool_calls = res.tool_calls and #res.tool_calls or nil
  else
    data.error = err
  end
  local agent = type(req.agent) == "string" and req.agent or nil
  local run_id, step, attempt = runs.target(caller)
  runs.record(run_id, res and "model_call" or "model_error", agent, data, step, attempt)
end

function _M.chat(req, emit, caller)
  local started = time.monotonic()
  local res, err, pname, model = _M.chat_call(req, emit)
  tally.model_call(pname, model, res)
  record(caller, req, pname, model, started, res, err)
  return res, err
end

-- One attempt of a call, within the call's deadline (if it has one).
local function attempt_chat(attempt, provider, req, model, emit, deadline)
  if deadline then
    req.timeout_left = math.floor(deadline - time.monotonic())
    if req.timeout_left <= 0 then return nil, { message = "timeout", retryable = false } end
  end
  return provider.chat(req, model, emit, attempt)
end

local function attempt_embed(attempt, provider, req, model) return provider.embed(req, model, attempt) end

-- The call itself: result | nil, message; then the provider's name and the model.
function _M.chat_call(req, emit)
  local err = check_request(req)
  if err then return nil, err end
  local provider, model, pname = _M.resolve_model(req.model)
  if not provider then return nil, model end
  local key
  if req.cache then
    key = cache.key(pname, model, req)
    local hit = cache.get(key)
    if hit then
      -- the same answer, without a request: it cost nothing this time
      if req.stream_deltas and hit.content then emit(hit.content) end
      hit.cached, hit.provider, hit.usage, hit.cost = true, pname, { input = 0, output = 0 }, 0
      return hit, nil, pname, model
    end
  end
  local g = gate(pname)
  g:acquire()
  -- `timeout` is the whole call's, retries and waits included
  local deadline = tonumber(req.timeout) and time.monotonic() + tonumber(req.timeout)
  local res, e = retry.call(attempt_chat, req.retry, provider, req, model, emit, deadline)
  g:release()
  if not res then return nil, pname .. ": " .. tostring(e), pname, model end
  if key then cache.put(key, res) end
  res.model = res.model or model
  res.provider = pname
  res.usage = res.usage or { input = 0, output = 0 }
  res.cost = pricing.cost(pname, model, res.usage)
  return res, nil, pname, model
end

function _M.embed(req)
  if req.input == nil then return nil, "llm.embed: 'input' is required" end
  local provider, model, pname = _M.resolve_model(req.model)
  if not provider then return nil, model end
  if not provider.embed then return nil, pname .. " has no embeddings" end
  local g = gate(pname)
  g:acquire()
  local res, e = retry.call(attempt_embed, req.retry, provider, req, model)
  g:release()
  if not res then return nil, pname .. ": " .. tostring(e) end
  res.model, res.provider = res.model or model, pname
  return res
end

return _M
