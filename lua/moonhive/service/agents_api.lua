-- moonhive.service.agents_api — the project's agents and workflows over HTTP:
--   GET  /v1/agents, GET /v1/workflows      what the reload registry holds
--   GET  /v1/agents/{name}, GET /v1/workflows/{name}   one, with its source
--   POST /v1/agents/{name}/runs, POST /v1/workflows/{name}/runs
--        body {"input": ...}: starts a run on the current version; 202 with
--        its id, or with ?wait=true 200 and the finished run's report
-- Definitions come from the project's agents/ and workflows/ and, after
-- them, the ones shipped with moonhive; `serve --watch` reloads them.

local cjson = require "cjson"
local launcher = require "moonhive.service.launcher"
local registry = require "moonhive.registry"

local _M = {}

local PLURAL = { agent = "agents", workflow = "workflows" }

-- What the API shows of a registry entry (with_source: its text too).
local function view(e, with_source)
  local file = e.shipped and (PLURAL[e.kind] .. "/" .. e.path:match("[^/]+$")) or e.display
  return { name = e.name, kind = e.kind, title = e.title and e.title.name or nil,
           description = e.title and e.title.description or nil, file = file, shipped = e.shipped,
           version = e.hash, loaded_at = e.loaded_at, versions = e.versions, error = e.last_error,
           error_at = e.error_at, source = with_source and e.source or nil }
end

-- The body's input: {"input": any JSON}; nil and a message when malformed.
local function input_of(body, kind)
  if body == "" then return nil, 'the body must be a JSON object: {"input": ...}' end
  local ok, v = pcall(cjson.decode, body)
  if not ok or type(v) ~= "table" then return nil, 'the body must be a JSON object: {"input": ...}' end
  if v.input == nil or v.input == cjson.null then
    return nil, ("the body needs an \"input\" (what the %s works on)"):format(kind)
  end
  return v.input
end

local function wants_wait(svc, req)
  local w = svc.query(req).wait
  return w == "true" or w == "1"
end

function _M.register(svc)
  local router = svc.router

  for kind, plural in pairs(PLURAL) do
    router:add("GET", "/v1/" .. plural, function()
      local out = {}
      for _, e in ipairs(registry.list()) do
        if e.kind == kind and e.listed then out[#out + 1] = view(e) end
      end
      return svc.json_list(200, plural, out)
    end)

    router:add("GET", "/v1/" .. plural .. "/{name}", function(_, _, p)
      local e = registry.get(kind, p.name)
      if not e then return svc.error(404, ("no %s named '%s'"):format(kind, p.name)) end
      return svc.json(200, view(e, true))
    end)

    router:add("POST", "/v1/" .. plural .. "/{name}/runs", function(req, _, p)
      local input, why = input_of(req.body, kind)
      if input == nil then return svc.error(400, why) end
      local h, status, err = launcher.start(kind, p.name, input)
      if not h then return svc.error(status, err) end
      local id = h:id()
      if not wants_wait(svc, req) then
        return svc.json(202, { run_id = id, status = "running",
                               links = { run = "/v1/runs/" .. id, events = "/v1/runs/" .. id .. "/events" } })
      end
      local report, e = h:wait()
      if not report then
        return svc.json(200, { run_id = id, status = e:find("cancelled", 1, true) and "cancelled" or "failed", error = e })
      end
      return 200, { ["Content-Type"] = "application/json" }, report .. "\n"
    end)
  end
end

return _M
