-- tour.lua — what `make run` shows: a sandboxed script on the event loop.
-- No network needed.
print("moonhive tour — a sandboxed Lua script on the host's event loop\n")

print("1. The sandbox gives scripts only what the host allows:")
print("   io = " .. tostring(rawget(_G, "io")) .. ", os.getenv = " .. tostring(os.getenv)
      .. ", string.dump = " .. tostring(string.dump))
local ok, err = pcall(function() return undefined_name end)
print("   reading an undefined global: " .. tostring(err):gsub("^.-: ", ""))

print("\n2. Waiting never blocks the loop; tasks run side by side:")
local t0 = time.monotonic()
local results = { task.all{
  function() sleep(200) return "a" end,
  function() sleep(200) return "b" end,
  function() sleep(200) return "c" end,
} }
print(("   three 200 ms sleeps -> %s in %d ms"):format(table.concat(results, ""), math.floor(time.monotonic() - t0)))

print("\n3. Limits hold, and a task that breaks one fails alone:")
local hog = task.spawn(function()
  local t = {}
  while true do t[#t + 1] = ("x"):rep(1e6) end
end)
local ok2, why = task.wait(hog)
print("   memory hog: " .. tostring(ok2) .. ", " .. why:gsub("^.-: ", ""))
local ok3, why3 = pcall(string.rep, "x", 1e6)
print("   ...and the script carries on: string.rep works again: " .. tostring(ok3 and #why3))

print("\n4. Modules: the native ones (http, time, log, task) and stdlib/:")
local retry = require "retry"
local tries = 0
local value = retry.call(function() tries = tries + 1 if tries < 3 then return nil, "not yet" end return "done" end,
  { base_ms = 10 })
print(("   retry.call -> %s after %d attempts"):format(value, tries))

print("\nNext: moonhive repl, moonhive run examples/concurrent.lua, docs/guide.md")
