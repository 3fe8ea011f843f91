-- moonhive.service.launcher — the service's runs of agents and workflows:
-- started on the reload registry's current versions through the runtime-only
-- `launch` module (host/mod_launch.c), each in the sandbox its definition
-- version shares with its other runs, and followed until they end.
--
--   start(kind, name, input, opts) -> handle | nil, http_status, message
--       kind "agent" | "workflow"; input any JSON value; opts.stream: the
--       handle's tokens() hands over the model's tokens as they come.
--       Returns once the run is recorded (handle:id()); handle:wait() gives
--       its report as JSON text.
--   cancel(id)      stops a run of this process (after the store says cancelled)
--   resume_all()    resumes every unfinished workflow run this process can
--                   take over (at the service's start); returns how many.
--                   First fails the agent runs whose process died (runs.reap)
--   poll()          every second: starts queued workflow runs and takes over
--                   those whose lease expired; returns how many
--   drain()         the service is stopping (moonhive.workflows.drain)
--   ended(id, kind, ok, result)   called by C when a launched run ends

local cjson = require "cjson"
local launch = require "launch"
local registry = require "moonhive.registry"
local runs = require "moonhive.runs"
local workflows = require "moonhive.workflows"

local _M = {}

local live = {} -- run id -> handle, while the run runs in this process

function _M.start(kind, name, input, opts)
  local e = registry.get(kind, name)
  if not e then return nil, 404, ("no %s named '%s'"):format(kind, name) end
  if not e.hash then
    return nil, 409, ("%s '%s' has no version that loads: %s"):format(kind, name, e.last_error or "not loaded yet")
  end
  local ok, text = pcall(cjson.encode, input)
  if not ok then return nil, 400, "the input cannot be encoded as JSON: " .. tostring(text) end
  local h, err = launch.start{ kind = kind, path = e.path, display = e.display, input = text,
                               stream = opts and opts.stream or false }
  if not h then return nil, 500, err end
  live[h:id()] = h
  return h
end

function _M.cancel(id)
  local h = live[id]
  if h then h:cancel() end
end

function _M.live()
  return launch.live()
end

-- SIGTERM: workflow runs stop at their next journaled point (agent runs
-- run on; the server cancels what is left after its grace period).
function _M.drain()
  workflows.drain()
end

function _M.ended(id, kind, ok, result)
  live[id] = nil
  if kind == "agent" and not ok then runs.interrupt(id, result) end
end

local token -- the resume path's grant (moonhive.workflows.grant), one per process
local warned = {} -- run id -> when a failure to start it was last logged (the poll retries every second)
local WARN_EVERY = 60

-- Launches every unfinished workflow run workflows.unfinished lists for
-- req (the grant added); returns how many started, or nil and a message.
local function launch_unfinished(req, quiet)
  token = token or workflows.grant()
  req.token = token
  local res, err = workflows.unfinished(req)
  if not res then return nil, err end
  if not quiet then
    for _, why in ipairs(res.busy or {}) do log.warn("serve: " .. why .. ": left alone") end
  end
  local n = 0
  for _, r in ipairs(res.runs) do
    local h, e = launch.start{ kind = "resume", id = r.id, token = token }
    if h then
      live[h:id()] = h
      warned[r.id] = nil
      n = n + 1
    else
      -- its lease goes, or this process would keep renewing it and no one would run it
      workflows.release(r.id)
      if time.now() - (warned[r.id] or -math.huge) >= WARN_EVERY then
        warned[r.id] = time.now()
        log.warn(("serve: run %s could not resume: %s"):format(r.id, e))
      end
    end
  end
  return n
end

function _M.resume_all()
  local reaped, why = runs.reap()
  if not reaped then log.warn("serve: agent runs of ended processes: " .. tostring(why))
  elseif reaped > 0 then log.info(("serve: %d agent run(s) of processes that ended marked failed"):format(reaped)) end
  return launch_unfinished({})
end

-- Called every second while the service runs: starts the workflow runs
-- queued since (`moonhive run --enqueue`, pending) and takes over those whose
-- lease expired (their process died or froze); runs this process executes
-- and runs other live processes hold are not touched.
function _M.poll()
  return launch_unfinished({ free = true }, true)
end

return _M
