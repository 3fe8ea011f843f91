-- moonhive.service.router — matches a request's method and path to a route.
-- Routes are patterns such as "/v1/runs/{id}/events"; a {name} segment
-- matches one percent-decoded path segment and lands in params.name.

local _M = {}
_M.__index = _M

function _M.new()
  return setmetatable({ routes = {} }, _M)
end

local function split(path)
  local parts = {}
  for seg in path:gmatch("[^/]+") do parts[#parts + 1] = seg end
  return parts
end

-- Adds a route: method ("GET"), pattern, handler(req, res, params) and the
-- role a caller needs: "public" (no credentials), "viewer", "operator" or
-- "admin"; by default viewer for GET, operator for anything else.
function _M:add(method, pattern, handler, role)
  local segs = {}
  for i, seg in ipairs(split(pattern)) do
    local name = seg:match("^{([%w_]+)}$")
    segs[i] = name and { param = name } or { text = seg }
  end
  role = role or (method == "GET" and "viewer" or "operator")
  self.routes[#self.routes + 1] = { method = method, pattern = pattern, segs = segs, handler = handler, role = role }
end

-- The routes, in the order they were added: {method=, pattern=, role=} each.
function _M:list()
  local out = {}
  for i, r in ipairs(self.routes) do out[i] = { method = r.method, pattern = r.pattern, role = r.role } end
  return out
end

local function decode(seg)
  local bad = false
  local out = seg:gsub("%%(%x?%x?)", function(hex)
    if #hex ~= 2 then bad = true return "" end
    return string.char(tonumber(hex, 16))
  end)
  if bad then return nil end
  return out
end

-- The route for method and path: route, params; or nil, status (404: no
-- such path, 405: the path exists with other methods, then their list).
function _M:match(method, path)
  local parts = split(path)
  local allowed
  for _, r in ipairs(self.routes) do
    if #r.segs == #parts then
      local params, ok = {}, true
      for i, seg in ipairs(r.segs) do
        if seg.text then
          if seg.text ~= parts[i] then ok = false break end
        else
          local v = decode(parts[i])
          if not v or v == "" then ok = false break end
          params[seg.param] = v
        end
      end
      if ok then
        if r.method == method or (method == "HEAD" and r.method == "GET") then return r, params end
        allowed = allowed or {}
        allowed[#allowed + 1] = r.method
      end
    end
  end
  if allowed then return nil, 405, table.concat(allowed, ", ") end
  return nil, 404
end

return _M
