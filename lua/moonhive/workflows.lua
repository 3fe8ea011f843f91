-- moonhive.workflows — the runtime's half of durable workflow runs: the
-- sandboxed engine (stdlib/workflow.lua) reaches it through the bridge
-- (host/mod_workflows.c) to start or attach to a run and to journal its
-- steps; the CLI (moonhive.cli) uses it to cancel, signal and list. All
-- storage goes through moonhive.store, never SQL.
--
-- Bridge entries, each fn(request, emit, caller):
-- Values named input, output, result, memory and payload are JSON text (the
-- engine encodes and decodes them with stdlib json, which is exact).
--
--   begin{workflow=, path=, source=, input=, queue=} -> {id=, version=, started_at=, status=}
--       stores the source by its SHA-256 and creates the run, leased to this
--       process (moonhive.lease); C binds the calling script to it (as
--       runs.start does). queue = true: the run is only enqueued (status
--       pending, no lease) for a `runs resume` or a service to claim
--   unfinished{id=, token=, free=} -> {runs = {{id=, workflow=, path=, source=, version=}, ...}, busy = {message, ...}}
--       what `moonhive runs resume [ID]` runs again, with the source each
--       run started with, each now leased to this process: run ID (an
--       error when another live process holds it), or every unfinished run
--       whose lease it could take (busy: why the others were left alone);
--       free: only pending runs and runs with no live lease (the service's
--       poll). A run this process already executes is never listed.
--   attach{id=, token=} -> {id=, workflow=, input=, status=, started_at=, journal = {[step] = entry},
--                           agents = {NAME = {hash=, path=, source=}}}
--       binds the calling script to an unfinished run this process holds
--       the lease of (C) and hands it the journal, and the version of each
--       agent its wf:calls ran (the last one)
-- unfinished and attach take runs over, so they need a token from grant(),
-- which only C can call (it is no bridge entry): `moonhive runs resume`
-- gets one and hands it to the engine's resume_main as an argument, where
-- workflow code (same sandbox, no debug library) cannot reach it.
--   step{step=, kind=, name=, args=, status=, result=, error=, memory=, attempts=, started_at=,
--        version=, path=, source=} -> {status=, lost=}
--       journals a step of the caller's run (durable before it returns),
--       as the run's event "step_done" too, and answers the run's
--       status, so the engine notices a cancellation; the usage of the
--       model calls the step's attempts made (held by moonhive.runs) joins
--       the run's totals in the same transaction;
--       version is the SHA-256 of the agent file a wf:call ran, whose text
--       (source, from path) comes with the first step that used it and is
--       stored with the versions
--   status{status=, output=, error=} -> {status=}
--   watch{} -> {status=, lost=, draining=}
--       waits until the caller's run is cancelled, taken over by another
--       process (lost: why), or finished, or the process drains; the
--       process's one watch loop (a background task) looks every 250 ms
--       at the watched runs that may have news (moonhive.watch_set: all of
--       them, in one query, once another process has committed), renews
--       its leases when due, and wakes the watches that have news
--   take_signal{name=, step=, memory=} -> {found=, payload=, status=, lost=}
-- Each answer with a status also renews the run's lease when due; lost
-- says why the run must stop (another process took it over); draining,
-- that the process is shutting down (drain()): the run stops at its next
-- journaled point and stays unfinished.
-- The writes of step, status and take_signal are fenced by the lease: after
-- another process took the run over they fail and write nothing.
-- shutdown() (the host closing) releases this process's leases.

local cjson = require "cjson"
local crypto = require "crypto"
local stores = require "moonhive.store"
local runs = require "moonhive.runs"
local lease = require "moonhive.lease"
local tally = require "moonhive.tally"
local watch_set = require "moonhive.watch_set"
local host_workflows = require "workflows" -- wake: a script's watch waiting in host memory

local _M = {}

local UNFINISHED = { pending = true, running = true, waiting = true }
local grants = {} -- tokens of the `runs resume` commands of this process
local stored = {} -- workflow versions this process has stored
local watches = watch_set.new() -- the runs whose engine waits in watch{}, and which a look must read
local woken = {} -- run id -> why its lease is lost, or false: news for watch_news (see wake)
local SETTABLE = { running = true, waiting = true, succeeded = true, failed = true }
local TERMINAL = { succeeded = true, failed = true }

local function backend(what)
  local s, err = stores.backend()
  if not s then return nil, what .. ": " .. err end
  return s
end

-- The backend for an entry that acts on the caller's own workflow run.
local function run_backend(caller)
  if not caller.run_id then return nil, "workflow: this script is not part of a workflow run" end
  return backend("workflow")
end

-- The store's change counter (store runs.changes), or nil when the backend
-- has none or cannot read it (the watch then reads every run).
local function change_counter(s)
  if not s.runs.changes then return nil end
  return (s.runs.changes()) -- the counter alone, not an error message
end

-- The SHA-256 of a workflow file's text: a run of the same file again
-- (a service starting thousands) finds it by the text, not by hashing it.
local versions_seen, versions_count = {}, 0
local function version_of(source)
  local v = versions_seen[source]
  if v then return v end
  if versions_count >= 64 then versions_seen, versions_count = {}, 0 end -- edits come and go: bounded
  v = crypto.sha256(source)
  versions_seen[source], versions_count = v, versions_count + 1
  return v
end

-- begin's work: the answer, nil and the store's pending db (the new run is
-- durable once it has committed) | nil, message.
local function begin_run(req)
  local s, err = backend("workflow")
  if not s then return nil, err end
  if type(req.workflow) ~= "string" or req.workflow == "" then return nil, "workflow: 'workflow' must be a name" end
  if type(req.source) ~= "string" then return nil, "workflow: 'source' must be the workflow file's text" end
  local ms, lerr = lease.duration()
  if not ms then return nil, lerr end
  local version = version_of(req.source)
  local ok, e = stored[version] or s.versions.put(version, req.path, req.source)
  if not ok then return nil, "workflow: cannot store its version: " .. e end
  stored[version] = true
  local status = req.queue and "pending" or "running"
  local id, pending = s.runs.create{ kind = "workflow", name = req.workflow, version = version, input = req.input,
                                     status = status, owner = not req.queue and lease.owner() or nil, lease_ms = ms }
  if not id then return nil, "workflow: cannot create the run: " .. pending end
  if not req.queue then
    lease.adopt(id)
    watches:owned(id, change_counter(s)) -- its watch reads it only after a change
  end
  return { id = id, version = version, started_at = time.now(), status = status }, nil, pending
end

-- A run is named to the script (which prints it, or hands it to an HTTP
-- client) only once it is durable: a process killed just after would
-- otherwise leave an id that names nothing.
function _M.begin(req)
  local res, err, pending = begin_run(req)
  if res and pending then
    local ok, e = pending:committed()
    if not ok then return nil, "workflow: cannot create the run: " .. e end
  end
  return res, err
end

-- Makes run (unfinished) this process's to execute: a pending one is
-- claimed, a running or waiting one leased. The run, false when another
-- process claimed it first, or nil and a message (who executes it).
local function take(s, run)
  if run.status == "pending" then
    local ms, err = lease.duration()
    if not ms then return nil, err end
    local claimed, e = s.runs.claim{ kind = "workflow", id = run.id, owner = lease.owner(), lease_ms = ms }
    if claimed then lease.adopt(run.id) end
    return claimed, e
  end
  local ok, e = lease.take(s, run.id)
  if not ok then return nil, e end
  runs.forget(run.id) -- it may come back after another process recorded events of it
  return run
end

-- A fresh token for the engine's resume path (called by C only).
function _M.grant()
  local token = crypto.random(16):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  grants[token] = true
  return token
end

local function granted(req)
  return type(req.token) == "string" and grants[req.token] == true
end
local NOT_GRANTED = "workflow: only `moonhive runs resume` may take over an existing run"

function _M.unfinished(req)
  if not granted(req) then return nil, NOT_GRANTED end
  local s, err = backend("runs resume")
  if not s then return nil, err end
  local list, busy, e = {}, {}, nil
  if req.id then
    local run
    run, e = s.runs.get(req.id)
    if not run then return nil, e end
    if run.kind ~= "workflow" then return nil, ("run %s is an agent run, not a workflow run"):format(run.id) end
    if not UNFINISHED[run.status] then return nil, ("run %s is %s: nothing to resume"):format(run.id, run.status) end
    local mine
    mine, e = take(s, run)
    if mine == false then e = ("run %s was claimed by another process"):format(run.id) end
    if not mine then return nil, e end
    list[1] = mine
  else
    local all
    all, e = s.runs.unfinished{ kind = "workflow", free = req.free }
    if not all then return nil, e end
    for _, run in ipairs(all) do
      -- a run this process executes already is never taken again
      local mine, why = not lease.holds(run.id) and take(s, run)
      if mine then list[#list + 1] = mine
      elseif mine == nil then busy[#busy + 1] = why end -- false: another process claimed it first, or it is ours
    end
  end
  local out = {}
  for i, run in ipairs(list) do
    local v, verr = s.versions.get(run.version)
    if not v then return nil, ("run %s: %s"):format(run.id, verr) end
    out[i] = { id = run.id, workflow = run.name, path = v.path, source = v.source, version = run.version }
  end
  return { runs = out, busy = busy }
end

function _M.attach(req)
  if not granted(req) then return nil, NOT_GRANTED end
  local s, err = backend("workflow")
  if not s then return nil, err end
  if type(req.id) ~= "string" then return nil, "workflow: attach needs a run id" end
  local changes = change_counter(s) -- read before the run: see watch_set.due
  local run, e = s.runs.get(req.id)
  if not run then return nil, e end
  if run.kind ~= "workflow" or not UNFINISHED[run.status] then
    return nil, ("run %s is not an unfinished workflow run"):format(req.id)
  end
  if not lease.holds(run.id) then
    return nil, ("run %s is not leased to this process (moonhive runs resume takes it)"):format(run.id)
  end
  local entries
  entries, e = s.journal.load(run.id)
  if not entries then return nil, e end
  local journal, agents = {}, {}
  for _, en in ipairs(entries) do
    journal[en.step] = en
    if en.kind == "call" and en.version and en.name then
      local v = s.versions.get(en.version)
      if v then agents[en.name] = { hash = en.version, path = v.path, source = v.source } end
    end
  end
  local ok
  ok, e = s.runs.set(run.id, { status = "running" }, lease.owner())
  if not ok then return nil, e end
  -- agent runs its steps had started when its last process stopped
  runs.abandon(run.id, "interrupted: the process running its workflow stopped")
  watches:owned(run.id, changes)
  return { id = run.id, workflow = run.name, input = run.input, status = e or "running", journal = journal,
           started_at = run.started_at, agents = agents }
end

local WATCH_MS = 250
local looping = false -- the watch loop is running

-- The run's status for the engine; renews its lease when due (lost: why
-- the run must stop, another process having taken it over).
local draining = false -- the process is shutting down: runs stop at their next journaled point

local function status_of(s, run_id)
  local status, e = s.runs.status(run_id)
  if not status then return nil, e end
  if status == "cancelled" then runs.close_all(run_id) end
  local ok, lost = lease.renew(s, run_id)
  return { status = status, lost = not ok and lost or nil, draining = draining or nil }
end

-- A store write of run_id that failed: "lease lost" said in full.
local function write_error(run_id, e)
  if e == "lease lost" then
    return ("workflow: run %s lost its lease: another process executes it now"):format(run_id)
  end
  return e
end

-- Stores the text of version `hash` (an agent file a step ran) once it is
-- checked to be that text.
local function store_version(s, hash, path, source)
  if type(source) ~= "string" then return true end
  if crypto.sha256(source) ~= hash then return nil, "workflow: a step's agent source does not match its version" end
  local ok, e = s.versions.put(hash, path, source)
  if not ok then return nil, "workflow: cannot store an agent's version: " .. e end
  return true
end

-- Journals step req of the caller's run through write (the store's put,
-- or its write, which does not wait): the answer, nil, and what write
-- left pending | nil, message.
local function write_step(s, req, caller, write)
  if req.version ~= nil and (type(req.version) ~= "string" or not req.version:match("^%x+$")) then
    return nil, "workflow: a step's version must be a SHA-256 in hex"
  end
  local stored, serr = store_version(s, req.version, req.path, req.source)
  if not stored then return nil, serr end
  -- the usage of the model calls its attempts made joins the run's totals with the entry
  local usage = req.status ~= "started" and runs.close_step(caller.run_id, req.step) or nil
  -- the entry is the run's event "step_done" too, for its followers (GET
  -- /v1/runs/{id}/events, the dashboard): moonhive.runs lists it by seq
  -- req, this call's own copy of the engine's request, is the entry (the
  -- store reads only the entry's fields from it)
  if type(req.started_at) ~= "number" then req.started_at = nil end
  req.seq = runs.step_seq(caller.run_id)
  local status, e = write(caller.run_id, req, lease.owner(), usage)
  if not status then
    if e ~= "lease lost" then e = "workflow: cannot journal step " .. tostring(req.step) .. ": " .. e end
    return nil, write_error(caller.run_id, e)
  end
  if req.kind == "tool" and req.status ~= "started" then tally.tool_result(req.name, req.status == "ok") end
  local ok, lost = lease.renew(s, caller.run_id)
  return { status = status, lost = not ok and lost or nil, draining = draining or nil }, nil, e
end

function _M.step(req, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  return write_step(s, req, caller, s.journal.put)
end

-- step answered at once (host/bridge.c: call_now), which the engine's
-- steps try first: the answer, nil and the store's db whose commit the
-- engine waits for; false when the store's calls may yield (store.sync).
function _M.step_now(req, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  if not s.sync then return false end
  return write_step(s, req, caller, s.journal.write)
end

function _M.status(req, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  if not SETTABLE[req.status] then return nil, "workflow: cannot set status " .. tostring(req.status) end
  local ok, now = s.runs.set(caller.run_id, { status = req.status, output = req.output, error = req.error },
                             lease.owner())
  if not ok then return nil, write_error(caller.run_id, now) end
  if TERMINAL[req.status] then
    watches:unwatch(caller.run_id) -- its watch was cancelled by its engine
    woken[caller.run_id] = nil
    lease.drop(caller.run_id)
    runs.close_all(caller.run_id)
  end
  return { status = now or req.status }
end

-- Wakes the watch of run id (if one waits; lost: why its lease is gone)
-- and forgets it: a watch entry's event, or the script's own wait in host
-- memory (watch_now), which then asks watch_news.
local function wake(id, lost)
  local w = watches:unwatch(id)
  if not w then return end
  if w.ev then
    w.lost = lost
    w.ev:set()
  else
    woken[id] = lost or false
    host_workflows.wake(id)
  end
end

-- One look at the watched runs that may have news (watch_set.due: when
-- no other process has committed, none): their statuses in one query; and
-- this process's leases renewed when due. The watch of a run that is
-- finished (cancelled, or gone), or whose lease was lost, is woken. A
-- cancellation made by this process wakes its run's watch at once (cancel).
local function look(s)
  local ids = watches:due(change_counter(s))
  local got = #ids == 0 and {} or s.runs.statuses(ids)
  local renewed = lease.renew_all(s)
  if not got then -- the store failed: look at every run next round
    watches:missed()
    return
  end
  local looked = {}
  for _, id in ipairs(ids) do looked[id] = got[id] or "gone" end
  -- a renewal may have found any watched run's lease lost
  for _, id in ipairs(renewed and watches:ids() or ids) do
    local st = looked[id] or "running"
    if st == "cancelled" then runs.close_all(id) end
    local lost = lease.lost(id)
    if lost then runs.forget(id) end -- another process records its events now
    if lost or not UNFINISHED[st] then wake(id, lost) end
  end
end

-- The process's one watch loop, a task of its own: runs while any run is
-- watched, looking every WATCH_MS.
local function watch_loop(s)
  while watches:any() do
    sleep(WATCH_MS)
    local ok, err = pcall(look, s)
    if not ok then log.warn("workflow watch: " .. tostring(err)) end
  end
  looping = false
end

-- The answer of a woken watch of run id. A cancelled run is not renewed,
-- so a renewal in the same look notes its lease lost too: cancelled wins.
local function news_of(s, id, lost)
  local status = s.runs.status(id)
  lost = lost or lease.lost(id)
  if status == "cancelled" then lost = nil end
  return { status = status, lost = lost, draining = draining or nil }
end

local function start_watch_loop(s)
  if not looping then
    looping = true
    task.background(watch_loop, s)
  end
end

function _M.watch(_, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  local id = caller.run_id
  local w = watches:watch(id, { ev = task.event() })
  if draining then wake(id) end
  start_watch_loop(s)
  w.ev:wait()
  return news_of(s, id, w.lost)
end

-- What watch_now's caller learns once woken (or at once, when draining).
function _M.watch_news(_, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  local id = caller.run_id
  local lost = woken[id]
  woken[id] = nil
  return news_of(s, id, lost)
end

-- watch answered at once (host/mod_workflows.c), on a store whose calls
-- never yield: the run is watched, and the script waits in host memory
-- until wake calls workflows.wake; {waiting = true}, or the news now.
function _M.watch_now(req, emit, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  if not s.sync then return false end
  if draining then return _M.watch_news(req, emit, caller) end
  watches:watch(caller.run_id, {})
  start_watch_loop(s)
  return { waiting = true }
end

-- begin and status answered at once (host/bridge.c: call_now) when the
-- store's calls never yield (store.sync); else false: the ordinary call.
local function at_once(entry)
  return function(req, emit, caller)
    local s = stores.backend()
    if not (s and s.sync) then return false end
    return entry(req, emit, caller)
  end
end
_M.begin_now, _M.status_now = at_once(begin_run), at_once(_M.status)

function _M.take_signal(req, _, caller)
  local s, err = run_backend(caller)
  if not s then return nil, err end
  local payload, found = s.signals.take(caller.run_id, req.name, {
    step = req.step, kind = "signal", name = req.name, status = "ok", memory = req.memory }, lease.owner())
  if found ~= true and found ~= false then return nil, write_error(caller.run_id, tostring(found)) end
  local st, e = status_of(s, caller.run_id)
  if not st then return nil, e end
  st.found, st.payload = found, payload
  return st
end

-- The service is shutting down: every workflow run of this process stops
-- at its next journaled point (the engine hears it in the answers of step,
-- take_signal and watch) and stays unfinished, for the next start to resume.
function _M.drain()
  draining = true
  for _, id in ipairs(watches:ids()) do wake(id) end
end

-- Lets go of run id, which unfinished{} took for this process but which
-- could not be started here (the service's launcher): the next poll, here
-- or in another process, takes it again. true | nil, message.
function _M.release(id)
  local s, err = backend("workflow")
  if not s then return nil, err end
  return lease.release(s, id)
end

-- Called once when the host closes: lets go of this process's leases.
function _M.shutdown()
  local s = stores.backend()
  if s then lease.release_all(s) end
end

-- ---- for the CLI ----

-- Cancels an unfinished workflow run: its process notices within a watch.
function _M.cancel(id)
  local s, err = backend("runs cancel")
  if not s then return nil, err end
  local run, e = s.runs.get(id)
  if not run then return nil, e end
  if not UNFINISHED[run.status] then return nil, ("run %s is already %s"):format(run.id, run.status) end
  local ok
  ok, e = s.runs.set(run.id, { status = "cancelled", error = "cancelled" })
  if not ok then return nil, e end
  if watches:get(run.id) then -- executed here: the store's change counter does not show this process's own writes
    runs.close_all(run.id)
    wake(run.id)
  end
  return run.id
end

-- payload: JSON text (a text that is not JSON is sent as a JSON string).
function _M.signal(id, name, payload)
  if payload ~= nil and not pcall(cjson.decode, payload) then payload = cjson.encode(payload) end
  local s, err = backend("runs signal")
  if not s then return nil, err end
  local run, e = s.runs.get(id)
  if not run then return nil, e end
  if run.kind ~= "workflow" then return nil, ("run %s is not a workflow run"):format(run.id) end
  if not UNFINISHED[run.status] then return nil, ("run %s is %s: it takes no more signals"):format(run.id, run.status) end
  local sid
  sid, e = s.signals.send(run.id, name, payload)
  if not sid then return nil, e end
  return run.id
end

-- The journal of a run (for `runs show`), or nil when it has none.
function _M.journal(id)
  local s = stores.backend()
  if not s then return nil end
  local entries = s.journal.load(id)
  if not entries or #entries == 0 then return nil end
  return entries
end

return _M
