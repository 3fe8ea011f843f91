-- moonhive.runs — recorded agent runs: every run gets an id; its input,
-- events (model calls, tool calls and results, errors, usage), output and
-- status are stored in SQLite (tables runs and run_events, moonhive.db).
--
-- Bridge entries (host/mod_runs.c), each fn(request, emit, caller):
--   start{agent=, input=, parent_step=} -> {id=}
--       a run started by a script that is itself part of a recorded run
--       (caller.run_id) is that run's child (parent_run); parent_step names
--       the workflow step that started it ("3.2.1"). A child's tokens and
--       cost count in its ancestors' totals too.
--   event{kind=, agent=, data=}         -> {seq=}   (into caller.run_id)
--   finish{status=, output=, error=}    -> {}       (caller.run_id)
-- For the runtime itself: record(run_id, kind, agent, data) (llm.lua records
-- each model call, with prompt(request): its prompt, capped), abandon (the
-- workflow runtime closes the agent runs of a step that ended without them),
-- and list/show/children for the CLI (`moonhive runs`, `moonhive trace`).

local cjson = require "cjson"
local crypto = require "crypto"
local database = require "moonhive.db"

local _M = {}

local STATUSES = { running = true, succeeded = true, failed = true, cancelled = true }
local seqs = {} -- run id -> last event number, while the run is live in this process
local ancestors = {} -- run id -> {parent, grandparent, ...}, while the run is live in this process
local MAX_LINEAGE = 8
local PROMPT_CAP = 4096 -- bytes of a model call's system prompt, and of its messages, recorded

local function encode(v)
  if v == nil then return nil end
  local ok, text = pcall(cjson.encode, v)
  return ok and text or cjson.encode(tostring(v))
end

local function decode(text)
  if text == nil then return nil end
  local ok, v = pcall(cjson.decode, text)
  if ok then return v end
  return text
end

-- A run id: time-ordered (so ids sort by start) and unguessable.
local function new_id()
  local hex = crypto.random(6):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  return ("%x"):format(math.floor(time.now() * 1000)) .. "-" .. hex
end

_M.new_id = new_id -- the workflow store's runs share the table and the ids


function _M.record(run_id, kind, agent, data)
  local db, err = database.get()
  if not db then return nil, err end
  local seq = (seqs[run_id] or 0) + 1
  if not seqs[run_id] then
    local row = db:first("SELECT max(seq) AS n FROM run_events WHERE run_id = ?", run_id)
    seq = (row and row.n or 0) + 1
  end
  local usage = kind == "model_call" and type(data) == "table" and type(data.usage) == "table" and data.usage
  local function total(d, id)
    local ok, e = d:run("UPDATE runs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost = cost + ? WHERE id = ?",
                        math.floor(tonumber(usage.input) or 0), math.floor(tonumber(usage.output) or 0),
                        tonumber(data.cost) or 0, id)
    if not ok then error(e, 0) end -- rolls the event back too
  end
  local function write(d)
    local ok, e = d:run("INSERT INTO run_events (run_id, seq, at, kind, agent, data) VALUES (?, ?, ?, ?, ?, ?)",
                        run_id, seq, time.now(), kind, agent, encode(data))
    if not ok then return nil, e end
    if usage then -- the run's totals (and its ancestors') move with the event, in one commit
      total(d, run_id)
      for _, id in ipairs(ancestors[run_id] or {}) do total(d, id) end
    end
    return true
  end
  local ok, done, e
  if usage then ok, done, e = pcall(db.transaction, db, write) else ok, done, e = true, write(db) end
  if not ok then return nil, tostring(done) end
  if not done then return nil, e end
  seqs[run_id] = seq
  return seq
end

function _M.start(req, _, caller)
  if type(req.agent) ~= "string" or req.agent == "" then return nil, "runs.start: 'agent' must be a name" end
  local parent = caller and caller.run_id
  local step = req.parent_step
  if step ~= nil then
    if type(step) ~= "string" or #step > 64 or not step:match("^%d[%d%.]*$") then
      return nil, "runs.start: 'parent_step' must be a workflow step id (\"3.2.1\")"
    end
    if not parent then return nil, "runs.start: 'parent_step' given, but this script is not part of a recorded run" end
  end
  local db, err = database.get()
  if not db then return nil, "runs.start: " .. err end
  local id = new_id()
  local ok, e = db:run([[INSERT INTO runs (id, agent, status, input, started_at, parent_run, parent_step)
                         VALUES (?, ?, 'running', ?, ?, ?, ?)]],
                       id, req.agent, encode(req.input), time.now(), parent, step)
  if not ok then return nil, "runs.start: " .. e end
  seqs[id] = 0
  if parent then
    local line = { parent }
    for _, a in ipairs(ancestors[parent] or {}) do
      if #line < MAX_LINEAGE then line[#line + 1] = a end
    end
    ancestors[id] = line
  end
  return { id = id }
end

function _M.event(req, _, caller)
  if not caller.run_id then return nil, "runs.event: this script is not part of a recorded run (call runs.start)" end
  if type(req.kind) ~= "string" or req.kind == "" then return nil, "runs.event: 'kind' must be a name" end
  local seq, err = _M.record(caller.run_id, req.kind, req.agent, req.data)
  if not seq then return nil, "runs.event: " .. err end
  return { seq = seq }
end

function _M.finish(req, _, caller)
  if not caller.run_id then return nil, "runs.finish: this script is not part of a recorded run" end
  if not STATUSES[req.status] or req.status == "running" then
    return nil, "runs.finish: 'status' must be succeeded, failed or cancelled"
  end
  local db, err = database.get()
  if not db then return nil, "runs.finish: " .. err end
  local ok, e = db:run("UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ? WHERE id = ?",
                       req.status, encode(req.output), req.error and tostring(req.error) or nil, time.now(),
                       caller.run_id)
  if not ok then return nil, "runs.finish: " .. e end
  seqs[caller.run_id], ancestors[caller.run_id] = nil, nil
  return {}
end

-- Fails the children of run parent (started by its step `step`, or by any
-- step when step is nil) that are still running: the step ended without
-- them (a timeout cancelled them, a retry moved on) or the process running
-- them died. true | nil, message.
function _M.abandon(parent, step, msg)
  local db, err = database.get()
  if not db then return nil, err end
  local where = "parent_run = ? AND status = 'running' AND (? IS NULL OR parent_step = ?)"
  local rows, e = db:query("SELECT id FROM runs WHERE " .. where, parent, step, step)
  if not rows then return nil, e end
  if #rows == 0 then return true end
  local ok
  ok, e = db:run("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE " .. where,
                 msg, time.now(), parent, step, step)
  if not ok then return nil, e end
  for _, r in ipairs(rows) do seqs[r.id], ancestors[r.id] = nil, nil end
  return true
end

-- text cut to at most n bytes (on a UTF-8 boundary), saying how much is left out.
local function cap(text, n)
  if #text <= n then return text end
  while n > 0 and (text:byte(n + 1) or 0) & 0xC0 == 0x80 do n = n - 1 end
  return text:sub(1, n) .. ("... [%d more bytes]"):format(#text - n)
end

local function as_text(v)
  if v == nil or type(v) == "string" then return v end
  local ok, text = pcall(cjson.encode, v)
  return ok and text or tostring(v)
end

-- What a model call is recorded with for `moonhive trace --verbose`: the
-- system prompt (capped at 4 KB) and the newest messages whose content fits
-- in 4 KB in all (the one crossing the limit is cut): system, messages,
-- omitted (how many older messages were left out).
function _M.prompt(req)
  local system = type(req.system) == "string" and cap(req.system, PROMPT_CAP) or nil
  local list, budget, i = {}, PROMPT_CAP, #req.messages
  while i >= 1 and budget > 0 do
    local m = req.messages[i]
    if type(m) ~= "table" then m = { content = m } end
    local text = as_text(m.content) or ""
    local rec = { role = m.role, content = cap(text, budget), name = m.name, tool_call_id = m.tool_call_id }
    budget = budget - #text
    if type(m.tool_calls) == "table" then
      rec.tool_calls = {}
      for j, c in ipairs(m.tool_calls) do
        local args = as_text(type(c) == "table" and c.arguments) or ""
        rec.tool_calls[j] = { name = type(c) == "table" and c.name or nil, arguments = cap(args, math.max(budget, 0)) }
        budget = budget - #args
      end
    end
    table.insert(list, 1, rec)
    i = i - 1
  end
  return system, list, i > 0 and i or nil
end

-- The runs run `id` started (its agent runs, for a workflow), oldest first.
function _M.children(id)
  local db, err = database.get()
  if not db then return nil, err end
  return db:query([[SELECT id, agent, kind, status, started_at, finished_at, tokens_in, tokens_out, cost, error,
                           parent_step FROM runs WHERE parent_run = ? ORDER BY started_at, rowid]], id)
end

-- The latest runs started by no other run, newest first.
function _M.list(limit)
  local db, err = database.get()
  if not db then return nil, err end
  local rows, e = db:query([[SELECT id, agent, kind, status, started_at, finished_at, tokens_in, tokens_out, cost
                             FROM runs WHERE parent_run IS NULL ORDER BY started_at DESC LIMIT ?]], limit or 20)
  if not rows then return nil, e end
  return rows
end

-- The row of run `id` (a unique prefix is enough) on db, or nil and a message.
function _M.find(db, id)
  local run = db:first("SELECT * FROM runs WHERE id = ?", id)
  if not run then
    local rows = db:query("SELECT * FROM runs WHERE id LIKE ? ORDER BY started_at DESC LIMIT 2", id .. "%")
    if rows and #rows == 1 then run = rows[1] end
  end
  if not run then return nil, ("no run '%s'"):format(id) end
  return run
end

-- One run with its events; nil and a message when there is no such run.
function _M.show(id)
  local db, err = database.get()
  if not db then return nil, err end
  local run, e = _M.find(db, id)
  if not run then return nil, e end
  run.input, run.output = decode(run.input), decode(run.output)
  run.events = db:query("SELECT seq, at, kind, agent, data FROM run_events WHERE run_id = ? ORDER BY seq", run.id)
  for _, ev in ipairs(run.events) do ev.data = decode(ev.data) end
  return run
end

return _M
