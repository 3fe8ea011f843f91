-- moonhive.runs — recorded agent runs: every run gets an id; its input,
-- events (model calls, tool calls and results, errors, usage), output and
-- status are stored in SQLite (tables runs and run_events, moonhive.db).
--
-- Bridge entries (host/mod_runs.c), each fn(request, emit, caller):
--   start{agent=, input=, version=}     -> {id=}   (version: SHA-256 of the agent file)
--   event{kind=, agent=, data=}         -> {seq=}   (into caller.run_id)
--   finish{status=, output=, error=}    -> {}       (caller.run_id)
-- For the runtime itself: record(run_id, kind, agent, data) (llm.lua records
-- each model call), list/show for the CLI (`moonhive runs`) and the
-- service, events_after for the service's live event stream.

local cjson = require "cjson"
local crypto = require "crypto"
local database = require "moonhive.db"

local _M = {}

local STATUSES = { running = true, succeeded = true, failed = true, cancelled = true }
local seqs = {} -- run id -> last event number, while the run is live in this process

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
  local function write(d)
    local ok, e = d:run("INSERT INTO run_events (run_id, seq, at, kind, agent, data) VALUES (?, ?, ?, ?, ?, ?)",
                        run_id, seq, time.now(), kind, agent, encode(data))
    if not ok then return nil, e end
    if usage then -- the run's totals move with the event, in one commit
      ok, e = d:run("UPDATE runs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost = cost + ? WHERE id = ?",
                    math.floor(tonumber(usage.input) or 0), math.floor(tonumber(usage.output) or 0),
                    tonumber(data.cost) or 0, run_id)
      if not ok then error(e, 0) end -- rolls the event back too
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

function _M.start(req)
  if type(req.agent) ~= "string" or req.agent == "" then return nil, "runs.start: 'agent' must be a name" end
  local db, err = database.get()
  if not db then return nil, "runs.start: " .. err end
  local id = new_id()
  local version = type(req.version) == "string" and req.version:match("^%x+$") or nil
  local ok, e = db:run("INSERT INTO runs (id, agent, status, input, started_at, version) VALUES (?, ?, 'running', ?, ?, ?)",
                       id, req.agent, encode(req.input), time.now(), version)
  if not ok then return nil, "runs.start: " .. e end
  seqs[id] = 0
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
  seqs[caller.run_id] = nil
  return {}
end

-- The latest runs, newest first.
function _M.list(limit)
  local db, err = database.get()
  if not db then return nil, err end
  local rows, e = db:query([[SELECT id, agent, kind, version, status, started_at, finished_at, tokens_in, tokens_out, cost
                             FROM runs ORDER BY started_at DESC LIMIT ?]], limit or 20)
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

-- Run `id`'s events with seq > after (at most `limit`, oldest first) and
-- the run's row; nil and a message when there is no such run. For
-- followers of a live run (the service's event stream).
function _M.events_after(id, after, limit)
  local db, err = database.get()
  if not db then return nil, err end
  local run, e = _M.find(db, id)
  if not run then return nil, e end
  local rows = db:query([[SELECT seq, at, kind, agent, data FROM run_events
                          WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?]], run.id, after, limit or 500)
  for _, ev in ipairs(rows or {}) do ev.data = decode(ev.data) end
  return rows or {}, run
end

return _M
