-- moonhive.service.audit — the audit log: every mutating call (any method
-- but GET and HEAD) with who made it, what, when and the result, in the
-- store; admins read it through GET /v1/audit.

local database = require "moonhive.db"

local _M = {}

function _M.record(principal, req, route, status)
  local db, err = database.get()
  if not db then
    log.error(("audit: cannot record %s %s: %s"):format(req.method, req.path, err))
    return
  end
  local ok, e = db:run([[INSERT INTO audit_log (at, principal, role, method, path, route, status, remote)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], time.now(), principal and principal.id or "anonymous",
                       principal and principal.role, req.method, req.path, route, status, req.remote)
  if not ok then log.error(("audit: cannot record %s %s: %s"):format(req.method, req.path, e)) end
end

function _M.list(limit)
  local db, err = database.get()
  if not db then return nil, err end
  return db:query([[SELECT id, at, principal, role, method, path, route, status, remote FROM audit_log
                    ORDER BY id DESC LIMIT ?]], limit)
end

return _M
