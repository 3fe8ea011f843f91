-- moonhive.tally — running totals of model calls (by provider and model)
-- and tool results (by tool and outcome) in the store (tables model_usage
-- and tool_usage, moonhive.db), added to as calls happen, so GET /metrics
-- reads a few small rows however many runs the store holds, and counts the
-- calls of every process sharing the store. Runs by kind and status are
-- counted by triggers on the runs table (run_counts).
--
-- Label values are bounded: names are cut to NAME_MAX bytes and cleaned of
-- control characters and broken UTF-8, and past MAX_SERIES distinct names a
-- new one counts as "(other)" (a model may ask for any tool name; a script
-- may name any model).

local database = require "moonhive.db"
local time = require "time"

local _M = {}

local NAME_MAX = 100
local MAX_SERIES = 200
_M.OTHER = "(other)"

-- name as a bounded, printable label value.
function _M.clean(name)
  name = tostring(name or "")
  if #name > NAME_MAX then
    local n = NAME_MAX
    while n > 0 and (name:byte(n + 1) or 0) & 0xC0 == 0x80 do n = n - 1 end
    name = name:sub(1, n)
  end
  name = name:gsub("%c", "?")
  if not utf8.len(name) then name = name:gsub("[\128-\255]", "?") end
  return name ~= "" and name or "?"
end

local MODEL_SQL = [[
  INSERT INTO model_usage (provider, model, calls, errors, cache_hits, tokens_in, tokens_out, cost)
  SELECT ?1, CASE WHEN EXISTS (SELECT 1 FROM model_usage WHERE provider = ?1 AND model = ?2)
                    OR (SELECT count(*) FROM model_usage) < ?3 THEN ?2 ELSE ']] .. _M.OTHER .. [[' END,
         ?4, ?5, ?6, ?7, ?8, ?9 WHERE true
  ON CONFLICT (provider, model) DO UPDATE SET calls = calls + excluded.calls, errors = errors + excluded.errors,
    cache_hits = cache_hits + excluded.cache_hits, tokens_in = tokens_in + excluded.tokens_in,
    tokens_out = tokens_out + excluded.tokens_out, cost = cost + excluded.cost]]

local TOOL_SQL = [[
  INSERT INTO tool_usage (tool, ok, calls)
  SELECT CASE WHEN EXISTS (SELECT 1 FROM tool_usage WHERE tool = ?1)
                OR (SELECT count(DISTINCT tool) FROM tool_usage) < ?2 THEN ?1 ELSE ']] .. _M.OTHER .. [[' END,
         ?3, ?4 WHERE true
  ON CONFLICT (tool, ok) DO UPDATE SET calls = calls + excluded.calls]]

local FLUSH_EVERY_MS = 1000

-- Counts not yet written: key -> row of increments, and the rows in the
-- order their names first came (past MAX_SERIES, the later names are "(other)").
local models, tools = {}, {}
local pending, last_flush = false, time.monotonic()

local function write(what, sql, ...)
  local db, err = database.get()
  local ok, e = false, err
  if db then ok, e = db:run(sql, ...) end
  if not ok then log.warn(("metrics: cannot count %s: %s"):format(what, tostring(e))) end
end

-- Writes every pending count (they join the loop turn's group commit).
function _M.flush()
  if not pending then return end
  local m, t = models, tools
  models, tools, pending, last_flush = {}, {}, false, time.monotonic()
  for _, r in ipairs(m) do
    write("model calls", MODEL_SQL, _M.clean(r.provider), _M.clean(r.model), MAX_SERIES, r.calls, r.errors,
          r.cache_hits, r.tokens_in, r.tokens_out, r.cost)
  end
  for _, r in ipairs(t) do write("tool calls", TOOL_SQL, _M.clean(r.tool), MAX_SERIES, r.ok, r.calls) end
end

_M.shutdown = _M.flush

local function added()
  pending = true
  if time.monotonic() - last_flush >= FLUSH_EVERY_MS then _M.flush() end
end

local function whole(n) return math.max(0, math.floor(tonumber(n) or 0)) end

-- One chat call to provider's model: its result (usage, cost, cached) or,
-- when it failed, nil. An unresolved model (an unknown provider) counts as
-- provider "(none)".
function _M.model_call(provider, model, res)
  provider, model = tostring(provider or "(none)"), provider and tostring(model) or "(none)"
  local key = provider .. "\0" .. model
  local r = models[key]
  if not r then
    r = { provider = provider, model = model, calls = 0, errors = 0, cache_hits = 0, tokens_in = 0,
          tokens_out = 0, cost = 0 }
    models[key] = r
    models[#models + 1] = r
  end
  local usage = res and type(res.usage) == "table" and res.usage or {}
  if res then r.calls = r.calls + 1 else r.errors = r.errors + 1 end
  if res and res.cached then r.cache_hits = r.cache_hits + 1 end
  r.tokens_in = r.tokens_in + whole(usage.input)
  r.tokens_out = r.tokens_out + whole(usage.output)
  r.cost = r.cost + (res and tonumber(res.cost) or 0)
  added()
end

-- One tool result: the tool's name and whether it succeeded.
function _M.tool_result(name, ok)
  name = tostring(name or "")
  local key = (ok and "1" or "0") .. name
  local r = tools[key]
  if not r then
    r = { tool = name, ok = ok and 1 or 0, calls = 0 }
    tools[key] = r
    tools[#tools + 1] = r
  end
  r.calls = r.calls + 1
  added()
end

-- The totals: {runs = {{kind, status, n}}, models = {{provider, model, calls,
-- errors, cache_hits, tokens_in, tokens_out, cost}}, tools = {{tool, ok, calls}}},
-- or nil and a message.
function _M.totals()
  _M.flush()
  local db, err = database.get()
  if not db then return nil, err end
  local out = {}
  for key, sql in pairs({
    runs = "SELECT kind, status, n FROM run_counts ORDER BY kind, status",
    models = [[SELECT provider, model, calls, errors, cache_hits, tokens_in, tokens_out, cost FROM model_usage
               ORDER BY provider, model]],
    tools = "SELECT tool, ok, calls FROM tool_usage ORDER BY tool, ok",
  }) do
    local rows, e = db:query(sql)
    if not rows then return nil, e end
    out[key] = rows
  end
  return out
end

return _M
