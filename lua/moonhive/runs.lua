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
-- by workflows.in_step) records into that attempt's agent run: a child of
-- the workflow run with parent_step "3.2.1", created by its first event and
-- closed by close_step when the step is journaled. For the runtime itself:
-- target(caller, agent) and record(run_id, kind, agent, data) (llm.lua
-- records each model call, with prompt(request): its prompt, capped),
-- close_step and abandon (the workflow runtime closes step agent runs), and
-- list/show/children for the CLI (`moonhive runs`, `moonhive trace`) and the
-- service, events_after for the service's live event stream, reap for the
-- service's start (agent runs whose process died). Tool results recorded
-- here are counted for GET /metrics (moonhive.tally).
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
local attempts = {} -- workflow run id -> step id -> {[attempt] = agent run id}: step agent runs still open
local usages = {} -- agent run id of an open step attempt -> {tokens_in=, tokens_out=, cost=}, written when it closes
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
  local held = usage and usages[run_id]
  if held then -- a step attempt's: its totals are written when the step is journaled
    held.tokens_in = held.tokens_in + math.floor(tonumber(usage.input) or 0)
    held.tokens_out = held.tokens_out + math.floor(tonumber(usage.output) or 0)
    held.cost = held.cost + (tonumber(data.cost) or 0)
    usage = nil
  end
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
  if kind == "tool_result" and type(data) == "table" then tally.tool_result(data.name, data.ok) end
  return seq
end

-- A new run (status running) of agent, the child of run parent (and of its
-- step) when given, started at `at` (default now), on the agent file's
-- version (SHA-256) when known: its id, or nil and a message.
local function create(db, agent, input, parent, step, at, version)
  local id = new_id()
  local ok, e = db:run([[INSERT INTO runs (id, agent, status, input, started_at, parent_run, parent_step, version,
                                           lease_owner)
                         VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)]],
                       id, agent, input, at or time.now(), parent, step, version, lease.owner())
  if not ok then return nil, e end
  seqs[id] = 0
  if parent then
    local line = { parent }
    for _, a in ipairs(ancestors[parent] or {}) do
      if #line < MAX_LINEAGE then line[#line + 1] = a end
    end
    ancestors[id] = line
  end
  return id
end

function _M.start(req, _, caller)
  if type(req.agent) ~= "string" or req.agent == "" then return nil, "runs.start: 'agent' must be a name" end
  local db, err = database.get()
  if not db then return nil, "runs.start: " .. err end
  local version = type(req.version) == "string" and req.version:match("^%x+$") or nil
  local id, e = create(db, req.agent, encode(req.input), caller and caller.run_id, nil, nil, version)
  if not id then return nil, "runs.start: " .. e end
  return { id = id }
end

-- The run a caller's events go to: its workflow step attempt's agent run
-- (created by the first one, started when the attempt began) when it is
-- inside one, else its own run. An attempt that records nothing (an agent
-- whose own run function makes no model or tool call) has no agent run.
function _M.target(caller, agent)
  local run_id, tag = caller and caller.run_id, caller and caller.step
  if not (run_id and tag) then return run_id end
  local step, n = tag:match("^([ce]?%.?[%d%.]+)#(%d+)$")
  if not step then return run_id end
  local steps = attempts[run_id] or {}
  attempts[run_id] = steps
  local open = steps[step] or {}
  steps[step] = open
  n = tonumber(n)
  if open[n] then return open[n] end
  local db = database.get()
  local id = db and create(db, agent or "agent", nil, run_id, step, tonumber(caller.step_at))
  if not id then return run_id end -- recorded in the workflow run rather than lost
  open[n], usages[id] = id, { tokens_in = 0, tokens_out = 0, cost = 0 }
  return id
end

-- Closes the agent runs of workflow run parent's step (one per attempt):
-- the last attempt ends as the step did (status "ok" or "error", its result
-- or error), earlier ones failed; each gets its totals. Returns their usage
-- in all {tokens_in=, tokens_out=, cost=} (the step's, for the workflow
-- run's totals), or nil when the step recorded none.
function _M.close_step(parent, step, status, result, err, last)
  local open = attempts[parent] and attempts[parent][step]
  if not open then return nil end
  attempts[parent][step] = nil
  if next(attempts[parent]) == nil then attempts[parent] = nil end
  local db = database.get()
  local sum = { tokens_in = 0, tokens_out = 0, cost = 0 }
  for n, id in pairs(open) do
    local u = usages[id]
    sum.tokens_in, sum.tokens_out, sum.cost = sum.tokens_in + u.tokens_in, sum.tokens_out + u.tokens_out, sum.cost + u.cost
    local ok = n == last and status == "ok"
    local msg = n == last and err or ("attempt %d failed; the step tried again"):format(n)
    if db then
      db:run([[UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ?, tokens_in = ?, tokens_out = ?,
                 cost = ? WHERE id = ?]], ok and "succeeded" or "failed", ok and result or nil,
             not ok and tostring(msg) or nil, time.now(), u.tokens_in, u.tokens_out, u.cost, id)
    end
    seqs[id], ancestors[id], usages[id] = nil, nil, nil
  end
  return sum
end

-- Closes every step agent run of workflow run parent still open (the run
-- ended, or was cancelled, inside those steps) as failed with msg.
function _M.close_all(parent, msg)
  for step in pairs(attempts[parent] or {}) do _M.close_step(parent, step, "error", nil, msg, 0) end
end

function _M.event(req, _, caller)
  if not caller.run_id then return nil, "runs.event: this script is not part of a recorded run (call runs.start)" end
  if type(req.kind) ~= "string" or req.kind == "" then return nil, "runs.event: 'kind' must be a name" end
  local seq, err = _M.record(_M.target(caller, req.agent), req.kind, req.agent, req.data)
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
  return db:query([[SELECT id, agent, kind, status, started_at, finished_at, tokens_in, tokens_out, cost, error,
                           parent_step FROM runs WHERE parent_run = ? ORDER BY started_at, rowid]], id)
end

-- The latest runs started by no other run, newest first.
function _M.list(limit)
  local db, err = database.get()
  if not db then return nil, err end
  local rows, e = db:query([[SELECT id, agent, kind, version, status, started_at, finished_at, tokens_in, tokens_out, cost
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
