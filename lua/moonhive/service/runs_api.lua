-- moonhive.service.runs_api — the recorded runs over HTTP:
--   GET /v1/runs[?limit=N]       the latest runs, newest first
--   GET /v1/runs/{id}            one run: input, output, events, (workflows) steps
--   GET /v1/runs/{id}/events     its events as Server-Sent Events, live until
--                                the run ends; resumable with Last-Event-ID
--   POST /v1/runs/{id}/cancel    cancels an unfinished workflow run
--   POST /v1/runs/{id}/signals/{name}   sends a signal (body: its JSON payload)
--                                to a workflow run waiting in wf:wait_signal
-- Runs live in the store, so runs started by any process (the CLI, another
-- worker) can be followed here.

local cjson = require "cjson"
local launcher = require "moonhive.service.launcher"
local runs = require "moonhive.runs"
local workflows = require "moonhive.workflows"

local _M = {}

local FINISHED = { succeeded = true, failed = true, cancelled = true }
local POLL_MS = 100          -- how often a live stream looks for new events
local HEARTBEAT_MS = 15000   -- a comment line keeps proxies from closing a quiet stream
local BATCH = 500
local RETRY_MS = 2000        -- how long an EventSource waits before it reconnects

-- 404 for an unknown run, 409 for one in the wrong state.
local function refused(svc, err)
  return svc.error(tostring(err):match("^no run") and 404 or 409, err)
end

-- Registers the routes on svc (moonhive.service).
function _M.register(svc)
  local router = svc.router

  router:add("POST", "/v1/runs/{id}/cancel", function(_, _, p)
    local id, err = workflows.cancel(p.id)
    if not id then return refused(svc, err) end
    launcher.cancel(id) -- a run of this process stops now; others notice the store
    return svc.json(200, { id = id, status = "cancelled" })
  end)

  router:add("POST", "/v1/runs/{id}/signals/{name}", function(req, _, p)
    local payload
    if req.body ~= "" then
      local ok = pcall(cjson.decode, req.body)
      if not ok then return svc.error(400, "the body must be JSON (the signal's payload), or empty") end
      payload = req.body
    end
    local id, err = workflows.signal(p.id, p.name, payload)
    if not id then return refused(svc, err) end
    return svc.json(202, { id = id, signal = p.name })
  end)

  router:add("GET", "/v1/runs", function(req)
    local q = svc.query(req)
    local limit = 20
    if q.limit then
      limit = math.tointeger(tonumber(q.limit))
      if not limit or limit < 1 or limit > 1000 then
        return svc.error(400, "limit must be a whole number from 1 to 1000")
      end
    end
    local rows, err = runs.list(limit)
    if not rows then return svc.error(500, err) end
    return svc.json_list(200, "runs", rows)
  end)

  router:add("GET", "/v1/runs/{id}", function(_, _, p)
    local run, err = runs.show(p.id)
    if not run then return svc.error(404, err) end
    run.steps = workflows.journal(run.id)
    if #run.events > 0 then return svc.json(200, run) end
    -- no events yet: still a JSON array (lua-cjson 2.1 encodes {} as an object)
    run.events = nil
    local status, headers, body = svc.json(200, run)
    return status, headers, (body:gsub("}\n$", ',"events":[]}\n'))
  end)

  router:add("GET", "/v1/runs/{id}/events", function(req, res, p)
    local after = 0
    local resume = req.headers["last-event-id"] or svc.query(req).after
    if resume then
      after = math.tointeger(tonumber(resume))
      if not after or after < 0 then return svc.error(400, "Last-Event-ID must be an event number") end
    end
    local rows, run = runs.events_after(p.id, after, BATCH)
    if not rows then return svc.error(404, run) end
    local ok = res:stream(200, { ["Content-Type"] = "text/event-stream", ["X-Accel-Buffering"] = "no" })
    -- First a reconnection delay for EventSource clients; it also shows
    -- clients (and proxies) at once that the stream is live.
    if not (ok and res:write(("retry: %d\n\n"):format(RETRY_MS))) then return end
    local quiet_since = time.monotonic()
    while true do
      for _, ev in ipairs(rows) do
        local data = cjson.encode({ seq = ev.seq, at = ev.at, kind = ev.kind, agent = ev.agent, data = ev.data })
        if not res:write(("id: %d\nevent: %s\ndata: %s\n\n"):format(ev.seq, (ev.kind:gsub("[\r\n]", "")), data)) then
          return
        end
        after = ev.seq
      end
      if #rows == 0 then
        if FINISHED[run.status] then
          res:write(("event: end\ndata: %s\n\n"):format(cjson.encode({ id = run.id, status = run.status })))
          return
        end
        if time.monotonic() - quiet_since >= HEARTBEAT_MS then
          if not res:write(": still running\n\n") then return end
          quiet_since = time.monotonic()
        end
        sleep(POLL_MS)
      else
        quiet_since = time.monotonic()
      end
      rows, run = runs.events_after(p.id, after, BATCH)
      if not rows then return end -- the run was deleted meanwhile
    end
  end)
end

return _M
