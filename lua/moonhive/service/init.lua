-- moonhive.service — the HTTP API's entry point. The server (host/server.c,
-- host/server_lua.c) runs handle(request, response) as a run of this
-- runtime for each request; it answers status, headers, body, or streams
-- through response:stream/write. Routes are registered here; every error
-- is JSON: {"error": {"status": N, "message": "..."}}.

local cjson = require "cjson"
local metrics = require "moonhive.service.metrics"
local Router = require "moonhive.service.router"

local _M = {}

local JSON = { ["Content-Type"] = "application/json" }
local router = Router.new()

-- A JSON response.
function _M.json(status, value)
  return status, JSON, cjson.encode(value) .. "\n"
end

-- A JSON error response.
function _M.error(status, message, headers)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return status, h, cjson.encode({ error = { status = status, message = message } }) .. "\n"
end

router:add("GET", "/health", function()
  return _M.json(200, { status = "ok", version = host.version() })
end)

router:add("GET", "/metrics", function()
  return 200, { ["Content-Type"] = "text/plain; version=0.0.4" }, metrics.render()
end)

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
    status, headers, body = route.handler(req, res, params)
  end
  metrics.observe(req.method == "HEAD" and "GET" or req.method, route and route.pattern or "(unmatched)",
    status or 200, (time.monotonic() - t0) / 1000)
  return status, headers, body
end

return _M
