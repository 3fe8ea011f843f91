-- sse.lua — read a Server-Sent Events stream as records, as they arrive.
--   moonhive run examples/sse.lua http://127.0.0.1:8080/events
local url = assert(arg[1], "usage: moonhive run examples/sse.lua URL")
local count = 0
local res, err = http.get(url, {
  idle_timeout = 30000,
  sse = function(ev)
    count = count + 1
    print(("event %s id=%s: %s"):format(ev.event, ev.id or "-", ev.data))
  end,
})
assert(res, err)
print(("%d events, status %d"):format(count, res.status))
