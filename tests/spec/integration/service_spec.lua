-- service_spec.lua — `moonhive serve` through real HTTP (curl): health,
-- metrics, JSON errors, the recorded runs API and its live event stream
-- (Server-Sent Events, resumable with Last-Event-ID), graceful shutdown,
-- and security: API keys, JWT HS256, roles per route, the rate limit and
-- the audit log.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local JWT_SECRET = "spec-secret-0123456789abcdef"
local admin_key -- created for each server

local function new_key(role)
  local r = H.moonhive({ "keys", "create", "--role", role })
  assert(r.code == 0, r.stderr)
  return (r.stdout:gsub("%s+$", ""))
end

-- curl -i with the admin key unless the extra arguments carry their own
-- Authorization (or "-H", "Authorization:" to send none).
local function get(srv, path, extra)
  local args = { "-i", srv.url(path) }
  local own = false
  for _, a in ipairs(extra or {}) do
    if a:match("^Authorization:") then own = true end
    table.insert(args, #args, a)
  end
  if not own then table.insert(args, 1, "-H") table.insert(args, 2, "Authorization: Bearer " .. admin_key) end
  local r = H.curl(args)
  assert(r.code == 0, "curl failed: " .. r.stderr)
  local head, body = r.stdout:match("^(.-)\r\n\r\n(.*)$")
  return tonumber(head:match("^HTTP/1%.1 (%d+)")), body, head
end

describe("moonhive serve", function()
  local srv
  before_each(function()
    admin_key = new_key("admin")
    srv = H.start_service({ MOONHIVE_JWT_SECRET = JWT_SECRET })
  end)
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

  it("shows a run without events with an empty events list", function()
    local id = H.ok(H.run_script([[
      local r = runs.start{agent = "quiet", input = "go"}
      print(r.id)
    ]])):match("(%S+)%s*$")
    local status, body = get(srv, "/v1/runs/" .. id)
    assert.equal(200, status)
    assert.matches('"events":[]', body, 1, true)
    assert.equal(id, cjson.decode(body).id)
  end)

  it("streams a live run's events as they are recorded", function()
    local script = H.tmpdir() .. "/live.lua"
    H.write(script, [[
      local r = runs.start{agent = "live", input = "x"}
      print(r.id)
      for i = 1, 4 do sleep(300) runs.event{kind = "tick", agent = "live", data = {i = i}} end
      runs.finish{status = "succeeded", output = "fin"}
    ]])
    local bg = H.spawn({ "run", script })
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
    assert.equal(0, bg.wait().code)
  end)

  it("a client that leaves a live stream does not disturb the server", function()
    local res = H.run_script([[
      local r = runs.start{agent = "forever", input = "x"}
      print(r.id)
    ]])
    local id = H.ok(res):match("(%S+)%s*$")  -- never finished: its stream stays open
    local r = H.curl({ "-N", "--max-time", "1", "-H", "Authorization: Bearer " .. admin_key,
                       srv.url("/v1/runs/" .. id .. "/events") })
    assert.equal(28, r.code) -- curl's timeout: the stream was still open
    local status = get(srv, "/health")
    assert.equal(200, status)
  end)

  it("SIGTERM waits for a live stream's handler to be cancelled after the grace period, then exits 0", function()
    srv.stop()
    srv = H.start_service({ MOONHIVE_SHUTDOWN_GRACE_MS = 300 })
    local res = H.run_script([[ local r = runs.start{agent = "open", input = "x"} print(r.id) ]])
    local id = H.ok(res):match("(%S+)%s*$")
    local client = H.spawn_program("/usr/bin/curl", { "-sS", "-i", "-N", "-H", "Authorization: Bearer " .. admin_key,
                                              srv.url("/v1/runs/" .. id .. "/events") })
    assert.is_true(H.wait_until(function() return client.stdout():match("text/event%-stream") ~= nil end))
    local log = srv.stderr
    local code = srv.stop()
    srv = nil
    assert.equal(0, code)
    assert.matches("still running after the grace period; cancelling it", log(), 1, true)
    assert.is_nil(client.wait().timed_out) -- the server closed the stream
  end)

  describe("security", function()
    local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    local function b64url(bytes)
      local out = {}
      for i = 1, #bytes, 3 do
        local a, b, c = bytes:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
        for k = 1, chars do
          local v = (n >> (6 * (4 - k))) & 63
          out[#out + 1] = B64:sub(v + 1, v + 1)
        end
      end
      return table.concat(out)
    end
    -- A JWT signed with secret (HMAC computed by moonhive's own crypto module).
    local function jwt(claims, secret, alg)
      local signing = b64url(cjson.encode({ alg = alg or "HS256", typ = "JWT" })) .. "." .. b64url(cjson.encode(claims))
      local hex = H.ok(H.eval(("return crypto.hmac_sha256(%q, %q)"):format(secret or JWT_SECRET, signing)))
      hex = hex:match("(%x+)")
      local raw = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      return signing .. "." .. b64url(raw)
    end
    local function status_of(path, token, method)
      local extra = { "-H", "Authorization: " .. (token and ("Bearer " .. token) or "") }
      if method then extra[#extra + 1] = "-X" extra[#extra + 1] = method end
      local st, body, head = get(srv, path, extra)
      return st, body and body ~= "" and cjson.decode(body) or nil, head
    end

    it("answers 401 as JSON without credentials or with bad ones, and /health stays open", function()
      local st, body, head = status_of("/v1/runs", nil)
      assert.equal(401, st)
      assert.matches("missing credentials", body.error.message, 1, true)
      assert.matches('WWW-Authenticate: Bearer realm="moonhive"', head, 1, true)
      assert.equal(401, (status_of("/v1/runs", "mh_00000000_00000000000000000000000000000000")))
      assert.equal(401, (status_of("/v1/runs", admin_key .. "0")))
      assert.equal(200, (status_of("/health", nil)))
    end)

    it("enforces roles per route (viewer reads, operator acts, admin audits) and revoked keys stop working", function()
      local viewer, operator = new_key("viewer"), new_key("operator")
      assert.equal(200, (status_of("/v1/runs", viewer)))
      local st, body = status_of("/v1/runs/x/cancel", viewer, "POST")
      assert.equal(403, st)
      assert.matches("needs the operator role; this caller is viewer", body.error.message, 1, true)
      assert.equal(404, (status_of("/v1/runs/nope/cancel", operator, "POST")))  -- allowed, no such run
      assert.equal(403, (status_of("/v1/audit", operator)))
      assert.equal(200, (status_of("/v1/audit", admin_key)))
      local id = viewer:match("^mh_(%x+)_")
      assert.equal(0, H.moonhive({ "keys", "revoke", id }).code)
      local st2, b2 = status_of("/v1/runs", viewer)
      assert.equal(401, st2)
      assert.matches("revoked", b2.error.message, 1, true)
      local list = H.moonhive({ "keys", "list", "--json" })
      assert.is_nil(list.stdout:find(viewer, 1, true)) -- only hashes are stored, never the key
    end)

    it("accepts JWT HS256 tokens and checks signature, alg, exp and nbf", function()
      local now = os.time()
      assert.equal(200, (status_of("/v1/runs", jwt({ sub = "ana", role = "viewer", exp = now + 600 }))))
      local cases = {
        { jwt({ sub = "ana", role = "viewer", exp = now - 3600 }), "expired" },
        { jwt({ sub = "ana", role = "viewer", exp = now + 600, nbf = now + 3600 }), "not valid yet" },
        { jwt({ sub = "ana", role = "viewer", exp = now + 600 }, "another-secret"), "signature is not valid" },
        { jwt({ sub = "ana", role = "viewer", exp = now + 600 }, JWT_SECRET, "none"), "HS256" },
        { jwt({ sub = "ana", role = "boss", exp = now + 600 }), "role claim" },
        { jwt({ sub = "ana", role = "viewer" }), "no exp" },
        { "not.a.jwt!", "signature is not valid" },
      }
      for i, c in ipairs(cases) do
        local st, body = status_of("/v1/runs", c[1])
        assert.equal(401, st, "case " .. i)
        assert.matches(c[2], body.error.message, 1, true)
      end
      local st, body = status_of("/v1/runs/x/cancel", jwt({ sub = "ana", role = "viewer", exp = now + 600 }), "POST")
      assert.equal(403, st)
      assert.matches("this caller is viewer", body.error.message, 1, true)
    end)

    it("rate-limits each caller with 429 and Retry-After", function()
      srv.stop()
      srv = H.start_service({ MOONHIVE_RATE_LIMIT = 1, MOONHIVE_RATE_BURST = 3 })
      local other = new_key("viewer")
      local codes = {}
      for i = 1, 5 do codes[i] = (status_of("/v1/runs", admin_key)) end
      assert.same({ 200, 200, 200, 429, 429 }, codes)
      local _, body, head = status_of("/v1/runs", admin_key)
      assert.matches("Retry%-After: %d+", head)
      assert.matches("rate limit exceeded", body.error.message, 1, true)
      assert.equal(200, (status_of("/v1/runs", other))) -- another key has its own bucket
    end)

    it("records every mutating call in the audit log, readable by admins", function()
      local operator = new_key("operator")
      status_of("/v1/runs/nope/cancel", operator, "POST")
      status_of("/v1/runs/nope/cancel", nil, "POST")
      status_of("/v1/runs", operator) -- a read: not audited
      local st, body = status_of("/v1/audit?limit=2", admin_key) -- newest first
      assert.equal(200, st)
      local e = body.entries
      assert.equal(2, #e)
      assert.equal("anonymous", e[1].principal)
      assert.equal(401, e[1].status)
      assert.equal("key:" .. operator:match("^mh_(%x+)_"), e[2].principal)
      assert.same({ "operator", "POST", "/v1/runs/nope/cancel", "/v1/runs/{id}/cancel", 404 },
        { e[2].role, e[2].method, e[2].path, e[2].route, e[2].status })
    end)

    it("never logs a credential", function()
      status_of("/v1/runs", admin_key)
      status_of("/v1/runs", jwt({ sub = "ana", role = "viewer", exp = os.time() + 60 }))
      local log = srv.stderr
      srv.stop()
      srv = nil
      assert.is_nil(log():find(admin_key, 1, true))
      assert.is_nil(log():find(JWT_SECRET, 1, true))
    end)
  end)
end)
