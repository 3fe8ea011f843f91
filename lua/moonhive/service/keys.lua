-- moonhive.service.keys — API keys for the service. A key is shown once, when
-- it is created ("mh_<id>_<secret>"); the store keeps its id, role, name and
-- a SHA-256 of the whole key (keys are 128 random bits, so a plain hash is
-- enough), never the key itself. Roles: admin, operator, viewer.

local crypto = require "crypto"
local database = require "moonhive.db"

local _M = {}

_M.ROLES = { admin = 3, operator = 2, viewer = 1 }
local TOUCH_EVERY = 60 -- seconds between last_used_at updates of one key

local function hex(bytes)
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- A new key: returns the key text (shown once) and its row.
function _M.create(role, name)
  if not _M.ROLES[role] then return nil, ("unknown role '%s' (admin, operator or viewer)"):format(tostring(role)) end
  local db, err = database.get()
  if not db then return nil, err end
  local id = hex(crypto.random(4))
  local key = "mh_" .. id .. "_" .. hex(crypto.random(16))
  local row = { id = id, role = role, name = name, created_at = time.now() }
  local ok, e = db:run("INSERT INTO api_keys (id, hash, role, name, created_at) VALUES (?, ?, ?, ?, ?)",
                       id, crypto.sha256(key), role, name, row.created_at)
  if not ok then return nil, "cannot store the key: " .. e end
  return key, row
end

function _M.list()
  local db, err = database.get()
  if not db then return nil, err end
  return db:query("SELECT id, role, name, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at")
end

function _M.revoke(id)
  local db, err = database.get()
  if not db then return nil, err end
  local row = db:first("SELECT id, revoked_at FROM api_keys WHERE id = ?", id)
  if not row then return nil, ("no API key '%s'"):format(id) end
  if row.revoked_at then return true end
  local ok, e = db:run("UPDATE api_keys SET revoked_at = ? WHERE id = ?", time.now(), id)
  if not ok then return nil, e end
  return true
end

local session_hash -- SHA-256 of this process's session key, when it has one

-- A new session key for this process ("mh_session_<secret>", role admin):
-- `moonhive serve` puts it in the dashboard's address on stdout. Only its
-- hash is kept, in memory: it dies with the process. nil when
-- MOONHIVE_SESSION_KEY=off.
function _M.session()
  if host.env("MOONHIVE_SESSION_KEY") == "off" then return nil end
  local key = "mh_session_" .. hex(crypto.random(16))
  session_hash = crypto.sha256(key)
  return key
end

local touched = {} -- id -> when last_used_at was last written by this process

-- The key's row when key is a live key; nil and why not otherwise.
function _M.check(key)
  if key:match("^mh_session_%x+$") then
    if session_hash and crypto.equal(session_hash, crypto.sha256(key)) then
      return { id = "session", role = "admin", name = "this process's session key" }
    end
    return nil, "unknown session key (it lasts as long as the process that printed it)"
  end
  local id = key:match("^mh_(%x+)_%x+$")
  if not id then return nil, "not an API key" end
  local db, err = database.get()
  if not db then return nil, err end
  local row = db:first("SELECT id, hash, role, name, revoked_at FROM api_keys WHERE id = ?", id)
  -- The hash is compared in constant time even when the id is unknown.
  local ok = crypto.equal(row and row.hash or ("0"):rep(64), crypto.sha256(key))
  if not (row and ok) then return nil, "unknown API key" end
  if row.revoked_at then return nil, "this API key was revoked" end
  local now = time.now()
  if not touched[id] or now - touched[id] > TOUCH_EVERY then
    touched[id] = now
    db:run("UPDATE api_keys SET last_used_at = ? WHERE id = ?", now, id)
  end
  return row
end

return _M
