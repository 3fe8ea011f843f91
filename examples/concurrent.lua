-- concurrent.lua — several things at once inside one run, with `task`.
-- Three workers sleep 300, 200 and 100 ms; together they take about 300 ms,
-- not 600, and finish shortest first.
--   moonhive run examples/concurrent.lua
local started = time.monotonic()
local finished = {}
local function worker(i, ms)
  sleep(ms)
  finished[#finished + 1] = ("worker %d (%d ms)"):format(i, ms)
  return ms
end
local a, b, c = task.all{
  function() return worker(1, 300) end,
  function() return worker(2, 200) end,
  function() return worker(3, 100) end,
}
print("finished in order: " .. table.concat(finished, ", "))
print(("slept %d ms in all, took %d ms"):format(a + b + c, math.floor(time.monotonic() - started)))
