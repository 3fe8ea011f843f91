-- service_spec.lua — `moonhive serve` through real HTTP (curl): health,
-- metrics, JSON errors, the recorded runs API and its live event stream
-- (Server-Sent Events, resumable with Last-Event-ID), graceful shutdown.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local function get(srv, path, extra)
  local args = { "-i", srv.url(path) }
  for _, a in ipairs(extra or {}) do table.insert(args, #args, a) end
  local r = H.curl(args)
  assert(r.code == 0, "curl failed: " .. r.stderr)
  local head, body = r.stdout:match("^(.-)\r\n\r\n(.*)$")
  return tonumber(head:match("^HTTP/1%.1 (%d+)")), body, head
end

describe("moonhive serve", function()
  local srv
  before_each(function() srv = H.start_service() end)
  after_each(function() if srv then assert.equal(0, srv.stop()) end end)

  it("answers /health and counts requests in /metrics by route pattern", function()
    local status, body = get(srv, "/health")
    assert.equal(200, status)
    assert.equal("ok", cjson.decode(body).status)
    get(srv, "/v1/runs/nope")
    local _, metrics = get(srv, "/metrics")
    assert.matches('moonhive_http_requests_total{method="GET",route="/health",status="200"} 1', metrics, 1, true)
    assert.matches('route="/v1/runs/{id}",status="404"', metrics, 1, true)
    assert.matches('moonhive_http_request_duration_seconds_count{method="GET",route="/health"} 1', metrics, 1, true)
  end)

  it("answers unknown routes and wrong methods with JSON errors", function()
    local status, body = get(srv, "/v2/nothing")
    assert.equal(404, status)
    assert.same({ status = 404, message = "no route for GET /v2/nothing" }, cjson.decode(body).error)
    local s2, b2, head = get(srv, "/health", { "-X", "DELETE" })
    assert.equal(405, s2)
    assert.matches("Allow: GET", head, 1, true)
    assert.matches("DELETE is not allowed", cjson.decode(b2).error.message, 1, true)
    local s3, b3 = get(srv, "/v1/runs?limit=0")
    assert.equal(400, s3)
    assert.matches("limit must be", cjson.decode(b3).error.message, 1, true)
  end)

  it("lists and shows recorded runs, and streams a finished run's events then 'end'", function()
    local res = H.run_script([[
      local r = runs.start{agent = "ticker", input = "go"}
      for i = 1, 3 do runs.event{kind = "tick", agent = "ticker", data = {i = i}} end
      runs.finish{status = "succeeded", output = "done"}
      print(r.id)
    ]])
    local id = H.ok(res):match("(%S+)%s*$")
    local status, body = get(srv, "/v1/runs")
    assert.equal(200, status)
    assert.equal(id, cjson.decode(body).runs[1].id)
    local s2, b2 = get(srv, "/v1/runs/" .. id)
    assert.equal(200, s2)
    local run = cjson.decode(b2)
    assert.equal("succeeded", run.status)
    assert.equal("done", run.output)
    assert.equal(3, #run.events)
    local s3, stream, head = get(srv, "/v1/runs/" .. id .. "/events")
    assert.equal(200, s3)
    assert.matches("Content-Type: text/event-stream", head, 1, true)
    assert.matches("Transfer-Encoding: chunked", head, 1, true)
    local ids = {}
    for n in stream:gmatch("id: (%d+)\nevent: tick\n") do ids[#ids + 1] = tonumber(n) end
    assert.same({ 1, 2, 3 }, ids)
    assert.same({ id = id, status = "succeeded" }, cjson.decode(stream:match("event: end\ndata: (%b{})")))
    -- resumed after event 2: only event 3, then the end
    local _, rest = get(srv, "/v1/runs/" .. id .. "/events", { "-H", "Last-Event-ID: 2" })
    assert.is_nil(rest:find("id: 2\n", 1, true))
    assert.matches('id: 3\nevent: tick\ndata: {', rest, 1, true)
    assert.matches("event: end", rest, 1, true)
  end)

  it("streams a live run's events as they are recorded", function()
    local script = H.tmpdir() .. "/live.lua"
    H.write(script, [[
      local r = runs.start{agent = "live", input = "x"}
      print(r.id)
      for i = 1, 4 do sleep(300) runs.event{kind = "tick", agent = "live", data = {i = i}} end
      runs.finish{status = "succeeded", output = "fin"}
    ]])
    local bg = H.spawn(H.bin, { "run", script })
    local id
    H.wait_until(function()
      local _, body = get(srv, "/v1/runs?limit=1")
      local r = cjson.decode(body).runs[1]
      if r and r.agent == "live" then id = r.id end
      return id ~= nil
    end, 15000)
    assert.is_not_nil(id)
    local s, stream = get(srv, "/v1/runs/" .. id .. "/events")  -- returns when the run ends
    assert.equal(200, s)
    local seen = {}
    for n in stream:gmatch('"i":(%d)') do seen[#seen + 1] = tonumber(n) end
    assert.same({ 1, 2, 3, 4 }, seen)
    assert.matches('"status":"succeeded"', stream, 1, true)
    assert.is_true(bg.wait())
    assert.equal(0, bg.code)
  end)

  it("a client that leaves a live stream does not disturb the server", function()
    local res = H.run_script([[
      local r = runs.start{agent = "forever", input = "x"}
      print(r.id)
    ]])
    local id = H.ok(res):match("(%S+)%s*$")  -- never finished: its stream stays open
    local r = H.curl({ "-N", "--max-time", "1", srv.url("/v1/runs/" .. id .. "/events") })
    assert.equal(28, r.code) -- curl's timeout: the stream was still open
    local status = get(srv, "/health")
    assert.equal(200, status)
  end)

  it("SIGTERM waits for a live stream's handler to be cancelled after the grace period, then exits 0", function()
    srv.stop()
    srv = H.start_service({ MOONHIVE_SHUTDOWN_GRACE_MS = 300 })
    local res = H.run_script([[ local r = runs.start{agent = "open", input = "x"} print(r.id) ]])
    local id = H.ok(res):match("(%S+)%s*$")
    local client = H.spawn("/usr/bin/curl", { "-sS", "-i", "-N", srv.url("/v1/runs/" .. id .. "/events") })
    assert.is_true(H.wait_until(function() return client.stdout():match("text/event%-stream") ~= nil end))
    local log = srv.stderr
    local code = srv.stop()
    srv = nil
    assert.equal(0, code)
    assert.matches("still running after the grace period; cancelling it", log(), 1, true)
    assert.is_true(client.wait()) -- the server closed the stream
  end)
end)
