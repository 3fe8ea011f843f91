-- moonhive.store — where durable workflow runs live: the runs and their
-- statuses (pending runs are the queue of work not started yet; pending,
-- running and waiting ones are unfinished), each run's step journal, the
-- workflow sources runs started with, and signals. The workflow engine
-- (moonhive.workflows) talks to this interface only, never to SQL, so a
-- second backend (Redis, for several workers sharing runs) is one more
-- file here. MOONHIVE_STORE picks the backend: "sqlite" (the default).
--
-- The contract every backend implements. Every function returns its value,
-- or nil and a short message; none raises on a storage failure.
--
--   sync (a field): true when no call of the backend yields (SQLite, on the
--       process's own connection). The engine's begin, step and status then
--       run in bridge calls answered at once (host/bridge.c: call_now),
--       without a run of their own, and a new run and a step wait for
--       durability in the script (runs.create's pending, journal.write). A backend that talks to a server (Redis)
--       leaves it nil.
--
--   runs.create{kind=, name=, version=, input=, status=, owner=, lease_ms=} -> id, pending
--       a new run, status "running", or "pending": queued until a
--       process claims it; ids sort by creation time; with owner, leased
--       to it (see leases). pending (sync backends): the db whose commit
--       makes the run durable (`pending:committed()` waits), which the
--       engine waits for before it names the run to anyone
--   runs.get(id) -> run | nil, "no run 'ID'"
--       run = {id, kind, name, version, status, input, output, error,
--              started_at, finished_at}; a unique id prefix is enough
--       (started_at: seconds since the epoch, as every time here)
--   runs.status(id) -> status | nil, "no run 'ID'"    (exact id; cheaper than get)
--   runs.statuses({id, ...}) -> {[id] = status}        (the runs that exist)
--   runs.changes() -> a value that differs from the one the previous call
--       returned whenever another process may have changed a run since
--       (nil: the backend cannot tell, so the caller must look)
--   runs.set(id, {status=, output=, error=}, owner) -> true
--       sets an unfinished run's status; a terminal one (succeeded, failed,
--       cancelled) sets finished_at (and, with owner, releases its lease);
--       a run already cancelled stays cancelled (returns true,
--       "cancelled"), another finished one is not changed (nil, message)
--   runs.unfinished{kind=, free=} -> {run, ...}
--       runs whose status is pending, running or waiting, oldest first;
--       with free, only the pending ones and those nobody holds a lease on
--       (none, or it expired)
--   runs.claim{kind=, id=, owner=, lease_ms=} -> run | false
--       the queue: the oldest pending run of kind (or run id, when it is
--       pending) becomes running, with started_at now and leased to owner,
--       in one atomic step, so two processes claiming at once never get
--       the same run; false when there is none
--
-- Leases: the process executing a run holds its lease, so no second
-- process executes it at the same time. owner is an opaque text naming the
-- holder ("host:pid:nonce"); times are seconds since the epoch.
--   runs.lease(id, owner, ms, {gone=, renew=}) -> true | false, {owner=, expires=}
--       takes unfinished run id's lease, or renews it, until now + ms:
--       when nobody holds it, its holder's lease has expired, owner holds
--       it already, or its holder is opts.gone (an owner the caller knows
--       has stopped); with opts.renew only when owner holds it. Else false
--       and who holds it until when (a finished run: nobody)
--   runs.release(id, owner) -> true    (only owner's own lease)
--   runs.renew(owner, ms) -> {[id] = true}
--       renews every lease owner holds on an unfinished run until now + ms;
--       the ids it renewed (one it holds no more is missing)
-- The writes of an executing run (journal.put, runs.set, signals.take) take
-- its owner as a fence: when another owner holds the lease they write
-- nothing and return nil, "lease lost".
--
--   journal.put(run_id, entry, owner, usage) -> the run's status
--       entry = {step=, kind=, name=, args=, status=, result=, error=,
--                memory=, attempts=, started_at=, version=, seq=}; step is
--                the engine's replay id ("3", "4.2.1"); args a digest of the
--                step's arguments; started_at when the step began (optional);
--                version the SHA-256 of the agent file a wf:call ran (its
--                text is in versions); seq (optional) the number of the
--                run's event the entry is (its "step_done": moonhive.runs
--                lists the entries that have one among the run's events);
--       status "started" (a sleep's wake-up time, a wait's deadline),
--       "ok" or "error". An entry is written once, except that a "started"
--       entry may be replaced by its outcome (which keeps the started
--       entry's time as started_at when it has none). usage =
--       {tokens_in=, tokens_out=, cost=} (optional) joins the run's totals:
--       kept with the entry, and summed into the run's own once it ends
--       (runs.set to a final status), in the same commit either way. Durable before it returns (see the
--       backend for exactly how durable); answers the run's status, so the
--       engine notices a cancellation without asking again.
--   journal.write(run_id, entry, owner, usage) -> the run's status, pending
--       (sync backends) put's write without the wait: it returns before
--       the entry is durable, with the store's db (`pending:committed()`
--       waits for it)
--   journal.load(run_id) -> {entry, ...} in the order they were written;
--       each also has `at` (when it was written) and started_at (at when
--       the step gave none)
--
--   versions.put(hash, path, source) -> true   (idempotent: hash is SHA-256)
--       the texts of the workflow files runs started with and of the agent
--       files their wf:calls ran
--   versions.get(hash) -> {hash, path, source} | nil, message
--
--   signals.send(run_id, name, payload) -> id
--       queued until the run takes it
--   signals.take(run_id, name, entry, owner) -> payload, true | nil, false
--       the oldest unread signal NAME of the run; taking it and writing the
--       journal entry (entry.result = payload) happen in one commit, so a
--       crash can neither lose the signal nor deliver it twice
--
-- Values (input, output, result, memory, payload) are JSON text, encoded by
-- the engine (stdlib json: exact integers and floats), stored and handed
-- back unchanged; a backend never decodes them. nil stays nil.

local host = require "host"

local _M = {}

local BACKENDS = { sqlite = "moonhive.store.sqlite" }
local chosen, failure

-- The backend module, or nil and why not.
function _M.backend()
  if chosen then return chosen end
  if failure then return nil, failure end
  local name = host.env("MOONHIVE_STORE") or "sqlite"
  local mod = BACKENDS[name]
  if not mod then
    failure = ("MOONHIVE_STORE=%s: no such store (sqlite)"):format(name)
    return nil, failure
  end
  chosen = require(mod)
  return chosen
end

return _M
