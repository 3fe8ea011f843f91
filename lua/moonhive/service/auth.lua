-- moonhive.service.auth — who is calling and may they: bearer credentials
-- (an API key, or a JWT HS256 signed with MOONHIVE_JWT_SECRET, whose
-- signature C checks without the secret ever reaching Lua), roles per route
-- (viewer < operator < admin), and a rate limit per caller (a token bucket:
-- MOONHIVE_RATE_LIMIT requests per second, default 50, bursts of
-- MOONHIVE_RATE_BURST, default twice that).

local cjson = require "cjson"
local jwt = require "auth"
local keys = require "moonhive.service.keys"

local _M = {}

local ROLES = keys.ROLES
local LEEWAY = 30 -- seconds of clock skew allowed for exp and nbf

local function jwt_principal(token)
  local header_text, payload_text = jwt.jwt_verify(token)
  if not header_text then return nil, payload_text end
  local okh, header = pcall(cjson.decode, header_text)
  local okp, claims = pcall(cjson.decode, payload_text)
  if not (okh and okp and type(header) == "table" and type(claims) == "table") then
    return nil, "the token's header or payload is not a JSON object"
  end
  if header.alg ~= "HS256" then return nil, "the token must be signed with HS256" end
  local now = time.now()
  if claims.exp == nil then return nil, "the token has no exp (expiry) claim" end
  if type(claims.exp) ~= "number" or now > claims.exp + LEEWAY then return nil, "the token has expired" end
  if claims.nbf ~= nil and (type(claims.nbf) ~= "number" or now + LEEWAY < claims.nbf) then
    return nil, "the token is not valid yet (nbf)"
  end
  if not ROLES[claims.role] then return nil, "the token's role claim must be admin, operator or viewer" end
  return { id = "jwt:" .. tostring(claims.sub or "?"), role = claims.role }
end

-- The caller of req: principal {id=, role=}, or nil and a message (401).
function _M.authenticate(req)
  local header = req.headers.authorization
  if not header then return nil, "missing credentials: send Authorization: Bearer <API key or JWT>" end
  local token = header:match("^[Bb]earer +(%S+)%s*$")
  if not token then return nil, "the Authorization header must be 'Bearer <API key or JWT>'" end
  if token:sub(1, 3) == "mh_" then
    local row, err = keys.check(token)
    if not row then return nil, err end
    return { id = "key:" .. row.id, role = row.role }
  end
  return jwt_principal(token)
end

-- May principal act with `role`?
function _M.allows(principal, role)
  return ROLES[principal.role] >= ROLES[role]
end

local rate = tonumber(host.env("MOONHIVE_RATE_LIMIT") or "") or 50
local burst = tonumber(host.env("MOONHIVE_RATE_BURST") or "") or rate * 2
local buckets = {} -- principal id -> {tokens, at}

-- Takes one request from principal's bucket: true, or nil and the seconds
-- until one is available (for Retry-After).
function _M.take(principal)
  if rate <= 0 then return true end
  local now = time.monotonic() / 1000
  local b = buckets[principal.id]
  if not b then
    b = { tokens = burst, at = now }
    buckets[principal.id] = b
  end
  b.tokens = math.min(burst, b.tokens + (now - b.at) * rate)
  b.at = now
  if b.tokens >= 1 then
    b.tokens = b.tokens - 1
    return true
  end
  return nil, math.max(1, math.ceil((1 - b.tokens) / rate))
end

return _M
