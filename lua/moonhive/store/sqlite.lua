-- moonhive.store.sqlite — the embedded backend of moonhive.store (see
-- store/init.lua for the contract): tables runs (kind 'workflow'), journal,
-- workflow_versions (workflow and agent texts) and signals of
-- $MOONHIVE_DATA/moonhive.db (migrations 4 and 5 in db.lua), on the
-- process's one connection.
--
-- Durability (the fsync policy). The database is in WAL mode. Writes are
-- group-committed (moonhive.db): all those of one loop turn — of every run
-- in the process — share one transaction, committed at the turn's end.
-- journal.put and signals.take wait for that commit: a journal entry is
-- committed before they return, so before the engine counts the step.
--   MOONHIVE_DURABILITY=normal (default): synchronous=NORMAL. A commit is in
--     the operating system's hands when it returns: it survives the process
--     being killed (SIGKILL, a crash, the OOM killer) at any instant, but a
--     power loss or kernel panic may lose the last commits (never corrupt
--     the file): steps would then run again on resume.
--   MOONHIVE_DURABILITY=full: synchronous=FULL. The WAL is fsynced at every
--     commit: also power-loss safe, at the cost of one fsync per commit
--     (per loop turn, however many steps it journals).

local cjson = require "cjson"
local host = require "host"
local database = require "moonhive.db"
local runs = require "moonhive.runs"

local new_id = runs.new_id -- the store's runs share the runs table with agent runs

-- sync: no call of this backend yields (SQLite on the process's own
-- connection; a durable write waits for its commit only in put and take)
local _M = { runs = {}, journal = {}, versions = {}, signals = {}, sync = true }

local TERMINAL = { succeeded = true, failed = true, cancelled = true }
local UNFINISHED = "('pending', 'running', 'waiting')"
-- The same test for one row found by its id: an IN list of three values
-- makes SQLite build a temporary index of them on every run of the statement
-- (about 15,000 instructions), plain comparisons do not.
local IS_UNFINISHED = "(status = 'pending' OR status = 'running' OR status = 'waiting')"
local LOST = "lease lost"
local positions = {} -- run id -> the last journal position written here (the lease holder is the only writer)

local opened, failure

local function db()
  if opened then return opened end
  if failure then return nil, failure end
  local d, err = database.get()
  if not d then return nil, err end
  local mode = host.env("MOONHIVE_DURABILITY") or "normal"
  if mode ~= "normal" and mode ~= "full" then
    failure = ("MOONHIVE_DURABILITY=%s: use normal or full"):format(mode)
    return nil, failure
  end
  if mode == "full" then
    local ok, e = d:exec("PRAGMA synchronous=FULL")
    if not ok then return nil, e end
  end
  opened = d
  return d
end

-- ---- runs ----

local function run_row(r)
  return { id = r.id, kind = r.kind, name = r.agent, version = r.version, status = r.status,
           input = r.input, output = r.output, error = r.error,
           started_at = r.started_at, finished_at = r.finished_at }
end

function _M.runs.create(req)
  local d, err = db()
  if not d then return nil, err end
  local status = req.status or "running"
  if status ~= "running" and status ~= "pending" then return nil, "a new run is running or pending, not " .. status end
  local id, now = new_id(), time.now()
  local ok, e = d:run([[INSERT INTO runs (id, agent, kind, version, status, input, started_at, lease_owner, lease_until)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)]],
                      id, req.name, req.kind or "workflow", req.version, status, req.input, now, req.owner,
                      req.owner and now + (req.lease_ms or 0) / 1000 or nil)
  if not ok then return nil, e end
  if status == "running" then -- ours to execute: its first entry and event need no max(pos), max(seq)
    positions[id] = 0
    runs.created(id)
  end
  return id, d
end

function _M.runs.claim(req)
  local d, err = db()
  if not d then return nil, err end
  local ok, row = pcall(d.transaction, d, function(t)
    local r
    if req.id then
      r = t:first("SELECT * FROM runs WHERE id = ? AND status = 'pending'", req.id)
    else
      r = t:first("SELECT * FROM runs WHERE kind = ? AND status = 'pending' ORDER BY started_at, rowid LIMIT 1",
                  req.kind or "workflow")
    end
    if not r then return false end
    r.status, r.started_at = "running", time.now()
    local done, e = t:run("UPDATE runs SET status = 'running', started_at = ?, lease_owner = ?, lease_until = ? WHERE id = ?",
                          r.started_at, req.owner, req.owner and r.started_at + (req.lease_ms or 0) / 1000 or nil, r.id)
    if not done then error(e, 0) end
    return r
  end)
  if not ok then return nil, tostring(row) end
  if row then positions[row.id] = nil end
  return row and run_row(row)
end

function _M.runs.get(id)
  local d, err = db()
  if not d then return nil, err end
  local row, e = runs.find(d, id)
  if not row then return nil, e end
  return run_row(row)
end

function _M.runs.status(id)
  local d, err = db()
  if not d then return nil, err end
  local row, e = d:first("SELECT status FROM runs WHERE id = ?", id)
  if not row then return nil, e or ("no run '%s'"):format(id) end
  return row.status
end

-- PRAGMA data_version: it moves whenever another connection (another
-- process) has committed since this one last read it; this connection's
-- own commits leave it alone.
function _M.runs.changes()
  local d, err = db()
  if not d then return nil, err end
  local row = d:first("PRAGMA data_version")
  return row and row.data_version
end

function _M.runs.statuses(ids)
  local d, err = db()
  if not d then return nil, err end
  local rows, e = d:query("SELECT id, status FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                          cjson.encode(ids))
  if not rows then return nil, e end
  local out = {}
  for _, r in ipairs(rows) do out[r.id] = r.status end
  return out
end

function _M.runs.set(id, fields, owner)
  local d, err = db()
  if not d then return nil, err end
  local finished = TERMINAL[fields.status] and time.now() or nil
  local release = finished ~= nil and owner ~= nil
  -- a run that ends gets the usage of its journaled steps (journal.put)
  local res, e = d:run([[UPDATE runs SET status = ?, output = coalesce(?, output), error = coalesce(?, error),
                           finished_at = coalesce(?, finished_at),
                           lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,
                           lease_until = CASE WHEN ? THEN NULL ELSE lease_until END,
                           (tokens_in, tokens_out, cost) = (SELECT runs.tokens_in + coalesce(sum(j.tokens_in), 0),
                             runs.tokens_out + coalesce(sum(j.tokens_out), 0), runs.cost + coalesce(sum(j.cost), 0)
                             FROM journal AS j WHERE ? AND j.run_id = runs.id)
                         WHERE id = ? AND ]] .. IS_UNFINISHED .. [[ AND (? IS NULL OR lease_owner = ?)]],
                       fields.status, fields.output, fields.error, finished, release, release, finished ~= nil,
                       id, owner, owner)
  if not res then return nil, e end
  if finished then positions[id] = nil end
  if res.changes == 0 then
    local row = d:first("SELECT status FROM runs WHERE id = ?", id)
    if not row then return nil, ("no run '%s'"):format(id) end
    if row.status == "cancelled" then return true, row.status end
    if TERMINAL[row.status] then return nil, ("run %s is already %s"):format(id, row.status) end
    return nil, LOST
  end
  return true
end

function _M.runs.unfinished(req)
  local d, err = db()
  if not d then return nil, err end
  local sql = "SELECT * FROM runs WHERE kind = ? AND status IN " .. UNFINISHED
  local rows, e
  if req and req.free then
    rows, e = d:query(sql .. " AND (status = 'pending' OR lease_owner IS NULL OR lease_until < ?) ORDER BY started_at",
                      req.kind or "workflow", time.now())
  else
    rows, e = d:query(sql .. " ORDER BY started_at", req and req.kind or "workflow")
  end
  if not rows then return nil, e end
  for i, r in ipairs(rows) do rows[i] = run_row(r) end
  return rows
end

-- ---- leases ----

function _M.runs.lease(id, owner, ms, opts)
  local d, err = db()
  if not d then return nil, err end
  local now, renew = time.now(), opts and opts.renew or false
  local res, e = d:run([[UPDATE runs SET lease_owner = ?, lease_until = ?
                         WHERE id = ? AND ]] .. IS_UNFINISHED .. [[ AND (lease_owner = ? OR NOT ? AND
                           (lease_owner IS NULL OR lease_until < ? OR lease_owner = ?))]],
                       owner, now + ms / 1000, id, owner, renew, now, opts and opts.gone)
  if not res then return nil, e end
  if res.changes == 1 then
    -- taken (not renewed): another process may have journaled since this one last did
    if not renew then positions[id] = nil end
    return true
  end
  local row = d:first("SELECT lease_owner, lease_until FROM runs WHERE id = ?", id)
  if not row then return nil, ("no run '%s'"):format(id) end
  return false, { owner = row.lease_owner, expires = row.lease_until }
end

function _M.runs.renew(owner, ms)
  local d, err = db()
  if not d then return nil, err end
  -- (only workflow runs have leases: the (kind, status) index finds them)
  local rows, e = d:query("UPDATE runs SET lease_until = ? WHERE kind = 'workflow' AND status IN " .. UNFINISHED
                          .. " AND lease_owner = ? RETURNING id", time.now() + ms / 1000, owner)
  if not rows then return nil, e end
  local out = {}
  for _, r in ipairs(rows) do out[r.id] = true end
  return out
end

function _M.runs.release(id, owner)
  local d, err = db()
  if not d then return nil, err end
  local ok, e = d:run("UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                      id, owner)
  if not ok then return nil, e end
  return true
end

-- Raises LOST (inside a transaction) unless owner holds run_id's lease.
local function fence(t, run_id, owner)
  if owner == nil then return end
  local row = t:first("SELECT lease_owner FROM runs WHERE id = ?", run_id)
  if not row or row.lease_owner ~= owner then error(LOST, 0) end
end

-- ---- journal ----

-- Writes entry, or the outcome of the step's "started" entry (which keeps
-- its position, and its time as started_at when the outcome has none).
local function put(d, run_id, en, usage)
  local pos = positions[run_id]
  if not pos then
    local row = d:first("SELECT max(pos) AS n FROM journal WHERE run_id = ?", run_id)
    pos = row and row.n or 0
  end
  pos = pos + 1
  local res, e = d:run([[INSERT INTO journal (run_id, step, pos, kind, name, args, status, result, error, memory,
                                              attempts, started_at, at, version, tokens_in, tokens_out, cost, seq)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                           args = excluded.args, status = excluded.status, result = excluded.result,
                           error = excluded.error, memory = excluded.memory, attempts = excluded.attempts,
                           started_at = coalesce(excluded.started_at, journal.started_at, journal.at),
                           at = excluded.at, version = excluded.version, tokens_in = excluded.tokens_in,
                           tokens_out = excluded.tokens_out, cost = excluded.cost, seq = excluded.seq
                         WHERE journal.status = 'started']],
                       run_id, en.step, pos, en.kind, en.name, en.args, en.status, en.result, en.error,
                       en.memory, en.attempts or 1, en.started_at, time.now(), en.version,
                       usage and usage.tokens_in or 0, usage and usage.tokens_out or 0, usage and usage.cost or 0,
                       en.seq)
  if not res then error(e, 0) end
  if res.changes == 0 then error(("step %s of run %s is already journaled"):format(en.step, run_id), 0) end
  positions[run_id] = pos
  return true
end

function _M.journal.write(run_id, entry, owner, usage)
  local d, err = db()
  if not d then return nil, err end
  -- the lease fence and the run's status, then the entry; no savepoint
  -- around the pair: both are in the loop turn's group commit. The usage
  -- stays on the entry until runs.set sums the journal into the run's row
  -- at its end; a run that has ended already (cancelled meanwhile) gets it
  -- on its row at once
  local row, e = d:first("SELECT status FROM runs WHERE id = ? AND (? IS NULL OR lease_owner = ?)",
                         run_id, owner, owner)
  if not row then return nil, e or LOST end
  local ended = TERMINAL[row.status]
  local ok, perr = pcall(put, d, run_id, entry, not ended and usage or nil)
  if not ok then return nil, tostring(perr) end
  if ended and usage then
    ok, perr = runs.add_to_totals(d, run_id, usage)
    if not ok then return nil, perr end
  end
  return row.status, d
end

function _M.journal.put(run_id, entry, owner, usage)
  local status, pending = _M.journal.write(run_id, entry, owner, usage)
  if not status then return nil, pending end
  local done, e = pending:committed()
  if not done then return nil, e end
  return status
end

function _M.journal.load(run_id)
  local d, err = db()
  if not d then return nil, err end
  local rows, e = d:query([[SELECT step, kind, name, args, status, result, error, memory, attempts,
                                   coalesce(started_at, at) AS started_at, at, version
                            FROM journal WHERE run_id = ? ORDER BY pos]], run_id)
  if not rows then return nil, e end
  return rows
end

-- ---- versions ----

function _M.versions.put(hash, path, source)
  local d, err = db()
  if not d then return nil, err end
  local ok, e = d:run("INSERT OR IGNORE INTO workflow_versions (hash, path, source, created_at) VALUES (?, ?, ?, ?)",
                      hash, path, source, time.now())
  if not ok then return nil, e end
  return true
end

function _M.versions.get(hash)
  local d, err = db()
  if not d then return nil, err end
  local row = d:first("SELECT hash, path, source FROM workflow_versions WHERE hash = ?", hash)
  if not row then return nil, ("no stored workflow version %s"):format(tostring(hash)) end
  return row
end

-- ---- signals ----

function _M.signals.send(run_id, name, payload)
  local d, err = db()
  if not d then return nil, err end
  local res, e = d:run("INSERT INTO signals (run_id, name, payload, sent_at) VALUES (?, ?, ?, ?)",
                       run_id, name, payload, time.now())
  if not res then return nil, e end
  return res.last_id
end

function _M.signals.take(run_id, name, entry, owner)
  local d, err = db()
  if not d then return nil, err end
  local ok, found = pcall(d.transaction, d, function(t)
    fence(t, run_id, owner)
    local sig = t:first([[SELECT id, payload FROM signals WHERE run_id = ? AND name = ? AND taken_at IS NULL
                          ORDER BY id LIMIT 1]], run_id, name)
    if not sig then return false end
    local done, e = t:run("UPDATE signals SET taken_at = ? WHERE id = ?", time.now(), sig.id)
    if not done then error(e, 0) end
    entry.result = sig.payload
    put(t, run_id, entry)
    return true
  end)
  if not ok then return nil, tostring(found) end
  if not found then return nil, false end
  local done, e = d:committed()
  if not done then return nil, e end
  return entry.result, true
end

return _M
