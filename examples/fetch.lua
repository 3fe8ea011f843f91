-- fetch.lua — an HTTP GET with retries, from a sandboxed script.
--   moonhive run examples/fetch.lua https://example.com/
local retry = require "retry"
local url = assert(arg[1], "usage: moonhive run examples/fetch.lua URL")

local res, err = retry.call(function(attempt)
  local r, e = http.get(url, { timeout = 10000 })
  if r and r.status < 500 then return r end
  log.warn(("attempt %d failed: %s"):format(attempt, e or ("status " .. r.status)))
  return nil, e or ("status " .. r.status)
end, { attempts = 3, base_ms = 200 })

if not res then
  print("failed: " .. err)
  error("could not fetch " .. url)
end
print(("status %d, %s, %d bytes"):format(res.status, res.headers["content-type"] or "?", #res.body))
