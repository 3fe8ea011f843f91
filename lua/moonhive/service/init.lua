-- moonhive.service — the HTTP API's entry point. The server (host/server.c,
-- host/server_lua.c) runs handle(request, response) as a run of this
-- runtime for each request; it answers status, headers, body, or streams
-- through response:stream/write. Routes are registered here; every error
-- is JSON: {"error": {"status": N, "message": "..."}}.

local cjson = require "cjson"
local audit = require "moonhive.service.audit"
local auth = require "moonhive.service.auth"
local metrics = require "moonhive.service.metrics"
local usage_metrics = require "moonhive.service.usage_metrics"
local Router = require "moonhive.service.router"

local _M = {}

local JSON = { ["Content-Type"] = "application/json" }
local router = Router.new()

-- A JSON response.
function _M.json(status, value)
  return status, JSON, cjson.encode(value) .. "\n"
end

-- A JSON response {key: list}: an empty list stays a JSON array (lua-cjson
-- 2.1 would encode an empty table as an object).
function _M.json_list(status, key, list)
  if #list == 0 then return status, JSON, cjson.encode({ [key] = false }):gsub("false}$", "[]}") .. "\n" end
  return _M.json(status, { [key] = list })
end

-- A JSON error response.
function _M.error(status, message, headers)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return status, h, cjson.encode({ error = { status = status, message = message } }) .. "\n"
end

router:add("GET", "/health", function()
  return _M.json(200, { status = "ok", version = host.version() })
end, "public")

router:add("GET", "/metrics", function()
  return 200, { ["Content-Type"] = "text/plain; version=0.0.4" }, metrics.render(usage_metrics.families())
end)

router:add("GET", "/v1/audit", function(req)
  local limit = math.tointeger(tonumber(_M.query(req).limit or "100"))
  if not limit or limit < 1 or limit > 1000 then return _M.error(400, "limit must be a whole number from 1 to 1000") end
  local rows, err = audit.list(limit)
  if not rows then return _M.error(500, err) end
  return _M.json_list(200, "entries", rows)
end, "admin")

-- The routes, for modules that add more.
_M.router = router

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The request's query string as a table (the first value of a repeated name).
function _M.query(req)
  local q = {}
  for pair in (req.query or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    if k ~= "" and q[k] == nil then q[k] = unescape(v) end
  end
  return q
end

require("moonhive.service.runs_api").register(_M)
require("moonhive.service.agents_api").register(_M)
require("moonhive.service.chat_api").register(_M)
require("moonhive.service.dashboard").register(_M)
router:add("GET", "/v1/openapi.json", function()
  return 200, JSON, require("moonhive.service.openapi").json(host.version())
end, "public")

local MUTATING = { GET = false, HEAD = false }

-- Runs a matched route for an authenticated, authorized, not rate-limited
-- caller; records mutating calls in the audit log.
function _M.guarded(route, req, res, params)
  if route.role == "public" then return route.handler(req, res, params) end
  local principal, why = auth.authenticate(req)
  local status, headers, body
  if not principal then
    status, headers, body = _M.error(401, why, { ["WWW-Authenticate"] = 'Bearer realm="moonhive"' })
  elseif not auth.allows(principal, route.role) then
    status, headers, body = _M.error(403, ("%s %s needs the %s role; this caller is %s"):format(req.method,
      route.pattern, route.role, principal.role))
  else
    local ok, wait = auth.take(principal)
    if not ok then
      status, headers, body = _M.error(429, ("rate limit exceeded; retry in %d s"):format(wait),
        { ["Retry-After"] = tostring(wait) })
    else
      status, headers, body = route.handler(req, res, params)
    end
  end
  if MUTATING[req.method] ~= false then audit.record(principal, req, route.pattern, status or 200) end
  return status, headers, body
end

function _M.handle(req, res)
  local t0 = time.monotonic()
  local route, params, allow = router:match(req.method, req.path)
  local status, headers, body
  if not route then
    if params == 405 then
      status, headers, body = _M.error(405, ("%s is not allowed here; use %s"):format(req.method, allow), { Allow = allow })
    else
      status, headers, body = _M.error(404, ("no route for %s %s"):format(req.method, req.path))
    end
  else
    status, headers, body = _M.guarded(route, req, res, params)
  end
  metrics.observe(req.method == "HEAD" and "GET" or req.method, route and route.pattern or "(unmatched)",
    status or 200, (time.monotonic() - t0) / 1000)
  return status, headers, body
end

return _M
