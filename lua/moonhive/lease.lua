-- moonhive.lease — this process's leases on the workflow runs it executes
-- (the store's runs.lease / runs.release): one owner id per process
-- ("hostname:pidns:pid:nonce"), the runs it holds and until when, renewal
-- once a third of a lease has passed (moonhive.workflows renews from the
-- engine's 250 ms poll), release of them all when the host closes. A lease
-- lasts MOONHIVE_LEASE_MS (default 15000): a process that stops renewing
-- (killed, frozen, cut off) keeps others from taking its runs over for at
-- most that long. One that is known to be gone — same host name and pid
-- namespace, and no process with its pid — is taken over at once.

local host = require "host"
local crypto = require "crypto"

local _M = {}

local DEFAULT_MS = 15000
local held = {} -- run id -> when this process's lease on it expires
local lost = {} -- run id -> why this process no longer holds it (another one took it over)
local owner_id, lease_ms, failure
local renewed_all = -math.huge -- time.now() of the last renew_all

-- The lease duration in ms, or nil and why MOONHIVE_LEASE_MS is unusable.
function _M.duration()
  if lease_ms then return lease_ms end
  if failure then return nil, failure end
  local text = host.env("MOONHIVE_LEASE_MS")
  local ms = text and math.tointeger(tonumber(text)) or (text == nil and DEFAULT_MS or nil)
  if not ms or ms < 100 then
    failure = ("MOONHIVE_LEASE_MS=%s: use a whole number of milliseconds >= 100"):format(tostring(text))
    return nil, failure
  end
  lease_ms = ms
  return ms
end

local me -- host.process()

function _M.owner()
  if not owner_id then
    me = host.process()
    local nonce = crypto.random(4):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    owner_id = ("%s:%s:%d:%s"):format(me.hostname, me.pidns, me.pid, nonce)
  end
  return owner_id
end

-- hostname, pid namespace, pid of an owner id.
local function parse(owner)
  local hostname, ns, pid = tostring(owner):match("^(.*):(%d*):(%d+):%x+$")
  return hostname, ns, tonumber(pid)
end

-- Whether owner is a process of this host, in this pid namespace, that no
-- longer exists.
function _M.gone(owner)
  _M.owner()
  local hostname, ns, pid = parse(owner)
  return pid ~= nil and hostname == me.hostname and ns == me.pidns and ns ~= "" and not host.alive(pid)
end

-- "pid N on host H until 2026-01-02 10:00:00 UTC" for a holder {owner=, expires=}.
function _M.describe(h)
  local hostname, _, pid = parse(h and h.owner)
  local who = pid and ("pid %s on host %s"):format(pid, hostname) or "another process"
  if h and h.expires then who = who .. os.date(" until %Y-%m-%d %H:%M:%S UTC", math.floor(h.expires + 0.999)) end
  return who
end

-- Notes that this process holds run id's lease (the store just gave it).
-- The first lease held starts renew_all's clock: every lease held since
-- expires a whole lease after it, so none is due for a third of one (a
-- renewal at the first look renewed every run a thousand new runs had just
-- leased).
function _M.adopt(id)
  if next(held) == nil then renewed_all = math.max(renewed_all, time.now()) end
  held[id] = time.now() + lease_ms / 1000
end

function _M.holds(id) return held[id] ~= nil end

-- Forgets run id (its lease was released with its final status).
function _M.drop(id) held[id] = nil end

-- Takes run id's lease through store s: true, or nil and a message naming
-- the process that executes it.
function _M.take(s, id)
  local ms, err = _M.duration()
  if not ms then return nil, err end
  local ok, h = s.runs.lease(id, _M.owner(), ms)
  if ok == false and h.owner and _M.gone(h.owner) then ok, h = s.runs.lease(id, _M.owner(), ms, { gone = h.owner }) end
  if ok == nil then return nil, h end
  if not ok then
    return nil, ("run %s is being executed by %s; resume it after that if that process is gone"):format(id, _M.describe(h))
  end
  _M.adopt(id)
  return true
end

-- Renews run id's lease when a third of it has passed: true, or nil and a
-- message when another process has taken the run over.
function _M.renew(s, id)
  local expires = held[id]
  if not expires or time.now() < expires - lease_ms / 1000 * 2 / 3 then return true end
  local ok, h = s.runs.lease(id, _M.owner(), lease_ms, { renew = true })
  if ok then
    _M.adopt(id)
    return true
  end
  if ok == nil then return true end -- the store failed: the next poll tries again
  held[id] = nil
  return nil, ("run %s lost its lease: it is now executed by %s"):format(id, _M.describe(h))
end

-- Renews, once a third of a lease has passed, every lease this process
-- holds in one store call; those it no longer holds are noted as lost.
-- Whether it renewed (so may have noted some) this time.
function _M.renew_all(s)
  if not lease_ms or next(held) == nil or time.now() < renewed_all + lease_ms / 1000 / 3 then return false end
  renewed_all = time.now()
  local ids = s.runs.renew(_M.owner(), lease_ms)
  if not ids then return false end -- the store failed: the next round tries again
  for id in pairs(held) do
    if ids[id] then _M.adopt(id)
    else
      held[id] = nil
      lost[id] = ("run %s lost its lease: another process executes it now"):format(id)
    end
  end
  return true
end

-- Why run id must stop (its lease was taken over), once; or nil.
function _M.lost(id)
  local why = lost[id]
  lost[id] = nil
  return why
end

-- Releases this process's lease of run id through store s: true | nil, message.
function _M.release(s, id)
  held[id] = nil
  return s.runs.release(id, _M.owner())
end

-- Releases every lease this process holds (the host is closing).
function _M.release_all(s)
  for id in pairs(held) do
    s.runs.release(id, _M.owner())
    held[id] = nil
  end
end

return _M
