-- moonhive.watch_set — the workflow runs this process watches, and which of
-- them one look of the watch loop (moonhive.workflows) must read. Pure
-- bookkeeping over the store's change counter (store runs.changes(): it
-- moves when another process commits; this process's own commits leave it
-- alone), so that a look reads only the runs that may have news.
--
--   set = watch_set.new()
--   set:owned(id, counter)  this process made run id its own (begin,
--                           attach) when the store's counter read `counter`
--                           (nil: unknown); read it before the run is read
--   set:watch(id, entry) -> entry   run id is watched from now on (entry:
--                           the watch's own table)
--   set:unwatch(id) -> entry | nil  no longer watched (woken, or it ended);
--                           its owned counter goes too
--   set:get(id) -> entry | nil
--   set:any() -> whether any run is watched
--   set:ids() -> {id, ...}  every watched run (a list: unwatch freely)
--   set:due(counter) -> {id, ...}  the runs one look must read, given the
--       counter now (nil: the store cannot tell): every watched run when the
--       counter is unknown or moved since the last due(); else only the runs
--       watched since the last due() whose owned counter differs from it or
--       is unknown (another process may have changed them before that look,
--       which did not read them)
--   set:missed()            the last look could not read: the next due()
--                           returns every run

local M = {}
M.__index = M

function M.new()
  return setmetatable({ runs = {}, fresh = {}, since = {}, seen = nil }, M)
end

function M:owned(id, counter)
  self.since[id] = counter
end

function M:watch(id, entry)
  entry.since, self.since[id] = self.since[id], nil
  self.runs[id], self.fresh[id] = entry, true
  return entry
end

function M:unwatch(id)
  local entry = self.runs[id]
  self.runs[id], self.fresh[id], self.since[id] = nil, nil, nil
  return entry
end

function M:get(id) return self.runs[id] end

function M:any() return next(self.runs) ~= nil end

function M:ids()
  local ids = {}
  for id in pairs(self.runs) do ids[#ids + 1] = id end
  return ids
end

function M:due(counter)
  local ids, all = {}, counter == nil or counter ~= self.seen
  for id in pairs(all and self.runs or self.fresh) do
    local entry = self.runs[id]
    if entry and (all or entry.since ~= counter) then ids[#ids + 1] = id end -- a nil since differs too
  end
  self.seen, self.fresh = counter, {}
  return ids
end

function M:missed()
  self.seen = nil
end

return M
