-- moonhive.registry — the project's agents and workflows as loaded versions
-- (hot reload). host/registry.c watches agents/ and workflows/ (and the file
-- `moonhive run --watch` runs), loads each changed file into a new sandbox,
-- checks that it returns an agent{} or a workflow{}, and reports the outcome
-- here; whoever starts a run (the --watch loop, the HTTP service) reads from
-- here which version is current. A version is a file's text, named by its
-- SHA-256. Nothing here touches a file or the store: it is the table.
--
-- An entry, one per file:
--   path         the file's real path (the key)
--   display      the path to show ("agents/coder.lua")
--   kind, name   "agent" | "workflow", and the name runs use: the file's
--                stem for agents/ and workflows/ ("coder" for agents/coder.lua)
--   title        the definition's own name and description: title.name, title.description
--   hash, source the current version (nil while no version ever loaded)
--   loaded_at    when it loaded (seconds since the epoch); versions: how many loaded so far
--   last_error   "file:line: message" of the last edit that did not load,
--                cleared by the next one that does; error_at: when
--   listed       false for a file outside agents/ and workflows/ (the --watch
--                file): found by path only, never by name
--   shipped      true for the agents/ and workflows/ shipped with moonhive
--                (`moonhive serve`): a project file of the same name comes first
--
-- Called by C (host/registry.c), each with one table:
--   seen{path=, hash=} -> true when hash is not the text last seen at path
--       (without hash: forgets what was seen there)
--   loaded{path=, display=, kind=, name=, title=, description=, hash=, source=, listed=}
--       -> the previous hash or nil
--   failed{path=, display=, kind=, name=, hash=, error=, listed=} -> the hash kept, or nil
--   removed{path=} -> the hash dropped, or nil
--   paths{dir=} -> "path\npath..."                 the entries of files in folder dir, for reading it again
--   pins{} -> {{path=, source=, hash=}, ...}     every current version, for a new run's sandbox
-- For the service:
--   get(kind, name) -> entry | nil               (the entry itself: do not change it)
--   entry(path) -> entry | nil
--   list() -> {entry without its source, ...}     sorted by kind, then name; a
--                                                shipped entry a project file overrides is left out

local _M = {}

local by_path = {}   -- real path -> entry
local by_name = { agent = {}, workflow = {} }      -- the project's files
local shipped = { agent = {}, workflow = {} }      -- moonhive's own
local seen = {}      -- real path -> hash of the text last read there

local function index(e)
  local names = e.shipped and shipped or by_name
  if e.listed and names[e.kind] then names[e.kind][e.name] = e end
end

local function unindex(e)
  local names = e.shipped and shipped or by_name
  if e.listed and names[e.kind] and names[e.kind][e.name] == e then names[e.kind][e.name] = nil end
end

local function entry_for(req)
  local e = by_path[req.path]
  if not e then
    e = { path = req.path, display = req.display or req.path, kind = req.kind, name = req.name,
          listed = req.listed and true or false, shipped = req.shipped and true or false, versions = 0 }
    by_path[req.path] = e
  end
  return e
end

function _M.seen(req)
  if req.hash == nil then seen[req.path] = nil return true end -- forget: the next reading is new
  if seen[req.path] == req.hash then return false end
  seen[req.path] = req.hash
  return true
end

function _M.loaded(req)
  local e = entry_for(req)
  local previous = e.hash
  unindex(e)
  e.kind, e.name, e.display = req.kind, req.name, req.display or e.display
  e.title = { name = req.title, description = req.description }
  e.hash, e.source, e.loaded_at = req.hash, req.source, time.now()
  e.versions = e.versions + 1
  e.last_error, e.error_at = nil, nil
  index(e)
  return previous
end

function _M.failed(req)
  local e = entry_for(req)
  e.last_error, e.error_at = req.error, time.now()
  if not e.hash then index(e) end -- a file that never loaded is listed with its error
  return e.hash
end

function _M.removed(req)
  local e = by_path[req.path]
  seen[req.path] = nil
  if not e then return nil end
  unindex(e)
  by_path[req.path] = nil
  return e.hash
end

function _M.paths(req)
  local out, prefix = {}, req.dir .. "/"
  for path in pairs(by_path) do
    if path:sub(1, #prefix) == prefix and not path:find("/", #prefix + 1, true) then out[#out + 1] = path end
  end
  table.sort(out)
  return table.concat(out, "\n")
end

function _M.pins()
  local out = {}
  for path, e in pairs(by_path) do
    if e.hash then out[#out + 1] = { path = path, source = e.source, hash = e.hash } end
  end
  return out
end

function _M.get(kind, name)
  if not by_name[kind] then return nil end
  return by_name[kind][name] or shipped[kind][name]
end

function _M.entry(path)
  return by_path[path]
end

function _M.list()
  local out = {}
  for _, e in pairs(by_path) do
    if e.shipped and e.listed and by_name[e.kind][e.name] then goto continue end -- a project file overrides it
    local copy = {}
    for k, v in pairs(e) do if k ~= "source" then copy[k] = v end end
    out[#out + 1] = copy
    ::continue::
  end
  table.sort(out, function(a, b)
    if a.kind ~= b.kind then return tostring(a.kind) < tostring(b.kind) end
    return tostring(a.name) < tostring(b.name)
  end)
  return out
end

return _M
