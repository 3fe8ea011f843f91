-- moonhive.runs — recorded agent runs: every run gets an id; its input,
-- events (model calls, tool calls and results, errors, usage), output and
-- status are stored in SQLite (tables runs and run_events, moonhive.db).
--
-- Bridge entries (host/mod_runs.c), each fn(request, emit, caller):
--   start{agent=, input=, version=}     -> {id=}   (version: SHA-256 of the agent file)
--       a run started by a script that is itself part of a recorded run
--       (caller.run_id) is that run's child (parent_run). A child's tokens
--       and cost count in its ancestors' totals too.
--   event{kind=, agent=, data=}         -> {seq=}   (into target(caller))
--   finish{status=, output=, error=}    -> {}       (caller.run_id)
-- A caller inside a workflow step's attempt (caller.step = "3.2.1#2", set
-- by workflows.in_step) records into the workflow run itself, each event
-- tagged with its step ("3.2.1") and attempt (2): a step needs no run of
-- its own, and the usage of its model calls is held here until the step is
-- journaled (close_step), when it joins the workflow run's totals in the
-- journal's own transaction. For the runtime itself: target(caller) and
-- record(run_id, kind, agent, data, step, attempt) (llm.lua records each
-- model call, with prompt(request): its prompt, capped), close_step,
-- close_all and abandon (the workflow runtime), and list/show/children for
-- the CLI (`moonhive runs`, `moonhive trace`) and the service, events_after
-- for the service's live event stream, reap for the service's start (agent
-- runs whose process died). Tool results recorded here are counted for GET
-- /metrics (moonhive.tally).
--
-- An agent run's lease_owner column names the process that runs it
-- (moonhive.lease's owner id; workflow runs hold a lease there), so a run
-- whose process was killed can be told from one still running.

local cjson = require "cjson"
local crypto = require "crypto"
local database = require "moonhive.db"
local lease = require "moonhive.lease"
local tally = require "moonhive.tally"

local _M = {}

local STATUSES = { running = true, succeeded = true, failed = true, cancelled = true }
local seqs = {} -- run id -> last event number, while the run is live in this process
local ancestors = {} -- run id -> {parent, grandparent, ...}, while the run is live in this process
local held = {} -- workflow run id -> step id -> {tokens_in=, tokens_out=, cost=}: usage of steps not yet journaled
local MAX_LINEAGE = 8
local ADD_USAGE = "UPDATE runs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost = cost + ? WHERE id = ?"
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
  return ("%x-%02x%02x%02x%02x%02x%02x"):format(math.floor(time.now() * 1000), crypto.random(6):byte(1, 6))
end

_M.new_id = new_id -- the workflow store's runs share the table and the ids


-- sum + u, both {tokens_in=, tokens_out=, cost=}: sum.
local function add_usage(sum, u)
  sum.tokens_in, sum.tokens_out, sum.cost = sum.tokens_in + u.tokens_in, sum.tokens_out + u.tokens_out, sum.cost + u.cost
  return sum
end

-- The number of run run_id's next event, taken (a number that is then not
-- written leaves a harmless gap). Its events are rows of run_events and,
-- for a workflow run, its journaled steps (each one its "step_done").
local function next_seq(db, run_id)
  local seq = seqs[run_id]
  if not seq then
    local row = db:first([[SELECT max(coalesce((SELECT max(seq) FROM run_events WHERE run_id = ?1), 0),
                                      coalesce((SELECT max(seq) FROM journal WHERE run_id = ?1), 0)) AS n]], run_id)
    seq = row and row.n or 0
  end
  seq = seq + 1
  seqs[run_id] = seq
  return seq
end

-- The number of the step_done event a step of workflow run run_id is
-- journaled as (the journal entry is that event: see show).
function _M.step_seq(run_id)
  local db, err = database.get()
  if not db then return nil, err end
  return next_seq(db, run_id)
end

-- Records event `kind` in run run_id (in step `step`'s attempt `attempt`
-- when given: see target): its number | nil, message. A model call's usage
-- joins the run's totals (and its ancestors') in the same commit, or, in a
-- step, is held until the step is journaled.
function _M.record(run_id, kind, agent, data, step, attempt)
  local db, err = database.get()
  if not db then return nil, err end
  local seq = next_seq(db, run_id)
  local usage = kind == "model_call" and type(data) == "table" and type(data.usage) == "table" and
                { tokens_in = math.floor(tonumber(data.usage.input) or 0),
                  tokens_out = math.floor(tonumber(data.usage.output) or 0), cost = tonumber(data.cost) or 0 }
  if usage and step then -- a step's: its totals are written when the step is journaled
    local steps = held[run_id] or {}
    held[run_id] = steps
    steps[step] = add_usage(steps[step] or { tokens_in = 0, tokens_out = 0, cost = 0 }, usage)
    usage = nil
  end
  local function total(d, id)
    local ok, e = d:run(ADD_USAGE, usage.tokens_in, usage.tokens_out, usage.cost, id)
    if not ok then error(e, 0) end -- rolls the event back too
  end
  local function write(d)
    local ok, e = d:run("INSERT INTO run_events (run_id, seq, at, kind, agent, data, step, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        run_id, seq, time.now(), kind, agent, encode(data), step, step and attempt or nil)
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
  -- an interrupted workflow run's "finished" is its last event here: its number is not kept
  if kind == "finished" then seqs[run_id] = nil end
  if kind == "tool_result" and type(data) == "table" then tally.tool_result(data.name, data.ok) end
  return seq
end

-- A new run (status running) of an agent; started inside another recorded
-- run (caller.run_id), it is that run's child, and of the step the caller
-- is in when that run is a workflow's.
function _M.start(req, _, caller)
  if type(req.agent) ~= "string" or req.agent == "" then return nil, "runs.start: 'agent' must be a name" end
  local db, err = database.get()
  if not db then return nil, "runs.start: " .. err end
  local version = type(req.version) == "string" and req.version:match("^%x+$") or nil
  local parent, step = _M.target(caller)
  local id = new_id()
  local ok, e = db:run([[INSERT INTO runs (id, agent, status, input, started_at, parent_run, parent_step, version,
                                           lease_owner)
                         VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)]],
                       id, req.agent, encode(req.input), time.now(), parent, step, version, lease.owner())
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

-- Run id was just created (by the workflow store): it has no events yet,
-- so its first needs no max(seq).
function _M.created(id)
  seqs[id] = 0
end

-- Where a caller's events go: its own run, and when it is inside a
-- workflow step's attempt (workflows.in_step), that step's id and the
-- attempt's number: run_id, step, attempt.
function _M.target(caller)
  local run_id, tag = caller and caller.run_id, caller and caller.step
  if not (run_id and tag) then return run_id end
  local step, n = tag:match("^([ce]?%.?[%d%.]+)#(%d+)$")
  if not step then return run_id end
  return run_id, step, math.tointeger(tonumber(n))
end

-- The usage the model calls of workflow run parent's step recorded (every
-- attempt's), for the run's totals when the step is journaled:
-- {tokens_in=, tokens_out=, cost=}, or nil when they recorded none.
function _M.close_step(parent, step)
  local steps = held[parent]
  local sum = steps and steps[step]
  if not sum then return nil end
  steps[step] = nil
  if next(steps) == nil then held[parent] = nil end
  return sum
end

-- Forgets what this process knew of run id's events (their last number):
-- the run was taken over, and another process may have recorded some since.
function _M.forget(id)
  seqs[id] = nil
end

-- Adds usage {tokens_in=, tokens_out=, cost=} to run id's totals on db:
-- true | nil, message.
function _M.add_to_totals(db, id, usage)
  return db:run(ADD_USAGE, usage.tokens_in, usage.tokens_out, usage.cost, id)
end

-- Workflow run parent ended (or was cancelled) here: the usage held for
-- its steps, which are never journaled now, joins its totals, and its
-- cached event number goes.
function _M.close_all(parent)
  seqs[parent] = nil -- its events end here (no "finished" event says so)
  local steps = held[parent]
  if not steps then return true end
  held[parent] = nil
  local sum = { tokens_in = 0, tokens_out = 0, cost = 0 }
  for _, u in pairs(steps) do add_usage(sum, u) end
  local db, err = database.get()
  if not db then return nil, err end
  local ok, e = _M.add_to_totals(db, parent, sum)
  if not ok then return nil, e end
  return true
end

local LIVE = { pending = true, running = true, waiting = true }

-- row (a runs row) with the usage of its journaled steps added when it is
-- an unfinished workflow run: those join the row itself only when the run
-- finishes (moonhive.store.sqlite).
local function live_totals(db, row)
  if row.kind ~= "workflow" or not LIVE[row.status] then return row end
  local j = db:first([[SELECT coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out,
                              coalesce(sum(cost), 0) AS cost FROM journal WHERE run_id = ?]], row.id)
  if j then add_usage(row, j) end
  return row
end

-- rows, each with live_totals; passes nil, message through.
local function all_live(db, rows, e)
  if not rows then return nil, e end
  for _, r in ipairs(rows) do live_totals(db, r) end
  return rows
end

function _M.event(req, _, caller)
  if not caller.run_id then return nil, "runs.event: this script is not part of a recorded run (call runs.start)" end
  if type(req.kind) ~= "string" or req.kind == "" then return nil, "runs.event: 'kind' must be a name" end
  local run_id, step, attempt = _M.target(caller)
  local seq, err = _M.record(run_id, req.kind, req.agent, req.data, step, attempt)
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
  -- a run cancelled meanwhile (POST /v1/runs/{id}/cancel) stays cancelled
  local ok, e = db:run("UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ? WHERE id = ? AND status <> 'cancelled'",
                       req.status, encode(req.output), req.error and tostring(req.error) or nil, time.now(),
                       caller.run_id)
  if not ok then return nil, "runs.finish: " .. e end
  seqs[caller.run_id], ancestors[caller.run_id] = nil, nil
  return {}
end

-- Ends agent run id, still recorded as running, whose script stopped
-- without finishing it (cancelled, or a limit broke): status failed, or
-- cancelled when msg says so. true | nil, message.
function _M.interrupt(id, msg)
  local db, err = database.get()
  if not db then return nil, err end
  local status = tostring(msg):find("cancelled", 1, true) and "cancelled" or "failed"
  local ok, e = db:run("UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                       status, tostring(msg), time.now(), id)
  if not ok then return nil, e end
  seqs[id], ancestors[id] = nil, nil
  return true
end

-- Fails the children of run parent that are still running: the process
-- running them died (a workflow run being taken over). true | nil, message.
function _M.abandon(parent, msg)
  local db, err = database.get()
  if not db then return nil, err end
  local where = "parent_run = ? AND status = 'running'"
  local rows, e = db:query("SELECT id FROM runs WHERE " .. where, parent)
  if not rows then return nil, e end
  if #rows == 0 then return true end
  local ok
  ok, e = db:run("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE " .. where,
                 msg, time.now(), parent)
  if not ok then return nil, e end
  for _, r in ipairs(rows) do seqs[r.id], ancestors[r.id] = nil, nil end
  return true
end

-- Fails every agent run still recorded as running whose process is known
-- to be gone (same host and pid namespace, no process with its pid: killed,
-- crashed): a killed `moonhive run` or server leaves them behind, and they
-- would count as active runs forever. Runs of other hosts are left alone.
-- The number of runs failed | nil, message.
function _M.reap()
  local db, err = database.get()
  if not db then return nil, err end
  local owners, e = db:query([[SELECT DISTINCT lease_owner AS owner FROM runs
                               WHERE kind = 'agent' AND status = 'running' AND lease_owner IS NOT NULL]])
  if not owners then return nil, e end
  local n = 0
  for _, o in ipairs(owners) do
    if lease.gone(o.owner) then
      local res, e2 = db:run([[UPDATE runs SET status = 'failed', error = ?, finished_at = ?
                                   WHERE kind = 'agent' AND status = 'running' AND lease_owner = ?]],
                                 ("interrupted: the process running it (%s) ended"):format(lease.describe{ owner = o.owner }),
                                 time.now(), o.owner)
      if not res then return nil, e2 end
      n = n + res.changes
    end
  end
  return n
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
  return all_live(db, db:query([[SELECT id, agent, kind, status, started_at, finished_at, tokens_in, tokens_out, cost,
                                        error, parent_step FROM runs WHERE parent_run = ? ORDER BY started_at, rowid]], id))
end

-- The latest runs started by no other run, newest first.
function _M.list(limit)
  local db, err = database.get()
  if not db then return nil, err end
  return all_live(db, db:query([[SELECT id, agent, kind, version, status, started_at, finished_at, tokens_in, tokens_out,
                                        cost FROM runs WHERE parent_run IS NULL ORDER BY started_at DESC LIMIT ?]],
                               limit or 20))
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

-- A run's events after number ?2: its rows of run_events, and its journaled
-- steps as "step_done" events (migration 13; the entries journaled before
-- it have no number, their step_done being a row of run_events). The
-- JSON merge patch drops the null members, as cjson.encode of a table
-- without them would.
local EVENTS = [[
  SELECT seq, at, kind, agent, data, step, attempt FROM run_events WHERE run_id = ?1 AND seq > ?2
  UNION ALL
  SELECT seq, at, 'step_done', CASE kind WHEN 'call' THEN name END,
         json_patch('{}', json_object('step', step, 'kind', kind, 'name', name, 'status', status,
                                      'error', error, 'attempts', attempts)), NULL, NULL
    FROM journal WHERE run_id = ?1 AND seq > ?2]]

-- One run with its events; nil and a message when there is no such run.
function _M.show(id)
  local db, err = database.get()
  if not db then return nil, err end
  local run, e = _M.find(db, id)
  if not run then return nil, e end
  live_totals(db, run)
  run.input, run.output = decode(run.input), decode(run.output)
  run.events = db:query(EVENTS .. " ORDER BY seq", run.id, 0)
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
  local rows = db:query(EVENTS .. " ORDER BY seq LIMIT ?3", run.id, after, limit or 500)
  for _, ev in ipairs(rows or {}) do ev.data = decode(ev.data) end
  return rows or {}, run
end

return _M
