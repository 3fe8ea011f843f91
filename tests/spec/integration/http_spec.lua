-- http_spec.lua — the `http` module end to end: moonhive scripts against the
-- test server (tests/tools/testserver.c, started once for this file).
--
-- Each case writes a script that receives the server's base URL as `...` and
-- reports what it saw through `emit(value)` (a tiny serializer module written
-- next to it), which the spec loads back as a Lua value.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local uv = require "luv"
local cjson = require "cjson"

-- Serializes a value as one line of Lua text, prefixed "EMIT ".
local EMIT_MODULE = [[
local function ser(v, seen)
  local t = type(v)
  if t == "string" then
    return (string.format("%q", v):gsub("\\\n", "\\n"):gsub("\r", "\\r"))
  elseif t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.17g", v)
  elseif t == "boolean" or t == "nil" then
    return tostring(v)
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
      return type(a) < type(b)
    end)
    local parts = {}
    for _, k in ipairs(keys) do
      parts[#parts + 1] = "[" .. ser(k) .. "]=" .. ser(v[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return string.format("%q", tostring(v))
end
return function(v) print("EMIT " .. ser(v)) end
]]

-- The first line of every script: line numbers of the body start at 2.
local PRELUDE = 'local U, emit = ..., require "emit"\n'

describe("http module", function()
  local srv

  lazy_setup(function()
    srv = H.start_testserver()
  end)

  lazy_teardown(function()
    if srv then srv.stop() end
    H.cleanup()
  end)

  -- Runs `body` (with U and emit in scope); returns the result and the list
  -- of emitted values.
  local function run(body, opts)
    opts = opts or {}
    local dir = H.tmpdir()
    H.write(dir .. "/emit.lua", EMIT_MODULE)
    local res = H.run_script(PRELUDE .. body, {
      dir = dir, flags = opts.flags, args = {srv.base}, env = opts.env,
    })
    res.values = {}
    for text in res.stdout:gmatch("EMIT ([^\n]*)\n") do
      res.values[#res.values + 1] = assert(load("return " .. text, "=emit", "t", {}))()
    end
    return res
  end

  -- Runs `body`, expects a clean exit and exactly one emitted value.
  local function value_of(body, opts)
    local res = run(body, opts)
    H.ok(res)
    assert(#res.values == 1, "expected one emitted value\n" .. H.show(res))
    return res.values[1]
  end

  -- A TCP port on 127.0.0.1 with nothing listening (bound, then closed).
  local function closed_port()
    local tcp = uv.new_tcp()
    assert(tcp:bind("127.0.0.1", 0))
    local port = tcp:getsockname().port
    tcp:close()
    H.wait_until(function() return tcp:is_closing() end, 1000)
    return port
  end

  -- The server's counters, read by a separate moonhive process (which itself
  -- opens one connection and makes one request).
  local function stats()
    return H.server_stats(srv)
  end

  describe("requests and responses", function()
    it("GET returns status, body, lower-case headers, url and version", function()
      local r = value_of([[
        local r, err = http.get(U .. "/hello")
        emit({r = r, err = err})
      ]])
      assert.is_nil(r.err)
      r = r.r
      assert.equals(200, r.status)
      assert.equals("hello world\n", r.body)
      assert.equals("text/plain", r.headers["content-type"])
      assert.equals("12", r.headers["content-length"])
      assert.equals(srv.url("/hello"), r.url)
      assert.equals("1.1", r.http_version)
      assert.is_nil(r.aborted)
    end)

    it("http.request with only a url is a GET", function()
      local body = value_of([[emit(assert(http.request{url = U .. "/echo"}).body)]])
      assert.equals("GET", cjson.decode(body).method)
    end)

    it("keeps every response header under its lower-case name", function()
      local h = value_of([[emit(assert(http.get(U .. "/headers")).headers)]])
      assert.equals("yes", h["x-test"])
      assert.is_nil(h["X-Test"])
      assert.matches("a=1", h["set-cookie"], 1, true)
      assert.matches("b=2", h["set-cookie"], 1, true)
    end)

    it("HEAD returns the headers and an empty body", function()
      local r = value_of([[emit(assert(http.request{url = U .. "/hello", method = "HEAD"}))]])
      assert.equals(200, r.status)
      assert.equals("", r.body)
      assert.equals("12", r.headers["content-length"])
    end)

    it("POST sends the body and custom headers", function()
      local body = value_of([[
        local r = assert(http.post(U .. "/echo", "payload \0 bytes", {
          headers = {["X-Custom"] = "v1", ["Content-Type"] = "text/plain", ["X-Number"] = 42},
        }))
        emit(r.body)
      ]])
      local echo = cjson.decode(body)
      assert.equals("POST", echo.method)
      assert.equals("/echo", echo.path)
      assert.equals("payload \0 bytes", echo.body)
      assert.equals("v1", echo.headers["x-custom"])
      assert.equals("42", echo.headers["x-number"])
      assert.equals("text/plain", echo.headers["content-type"])
      assert.equals(tostring(#"payload \0 bytes"), echo.headers["content-length"])
    end)

    it("sends PUT, PATCH and DELETE with their bodies", function()
      local v = value_of([[
        local out = {}
        for _, m in ipairs({"PUT", "PATCH", "DELETE"}) do
          local r = assert(http.request{url = U .. "/echo?m=" .. m, method = m, body = "b-" .. m})
          out[m] = r.body
        end
        emit(out)
      ]])
      for _, m in ipairs({"PUT", "PATCH", "DELETE"}) do
        local echo = cjson.decode(v[m])
        assert.equals(m, echo.method)
        assert.equals("/echo?m=" .. m, echo.path)
        assert.equals("b-" .. m, echo.body)
      end
    end)

    it("an error status is a response, not an error", function()
      local v = value_of([[
        local out = {}
        for _, s in ipairs({404, 500, 503}) do
          local r, err = http.get(U .. "/status/" .. s)
          out[#out + 1] = {status = r and r.status, body = r and r.body, err = err,
                           retry = r and r.headers["retry-after"]}
        end
        emit(out)
      ]])
      assert.same({
        {status = 404, body = "status 404\n"},
        {status = 500, body = "status 500\n"},
        {status = 503, body = "status 503\n", retry = "1"},
      }, v)
    end)

    it("assembles a chunked body", function()
      local r = value_of([[emit(assert(http.get(U .. "/chunked?n=5&size=3")))]])
      assert.equals(200, r.status)
      assert.equals("000111222333444", r.body)
      assert.equals("chunked", r.headers["transfer-encoding"])
    end)

    it("reads a large body whole", function()
      local v = value_of([[
        local r = assert(http.get(U .. "/bytes/3000000"))
        emit({len = #r.body, all_x = r.body:find("[^x]") == nil})
      ]])
      assert.same({len = 3000000, all_x = true}, v)
    end)
  end)

  describe("stream callback", function()
    it("receives the body in order, in pieces, and no body field", function()
      local v = value_of([[
        local chunks = {}
        local r = assert(http.request{
          url = U .. "/chunked?n=4&size=5&delay=100",
          stream = function(chunk) chunks[#chunks + 1] = chunk end,
        })
        emit({n = #chunks, all = table.concat(chunks), status = r.status,
              body = r.body, aborted = r.aborted})
      ]])
      assert.equals("00000111112222233333", v.all)
      assert.equals(200, v.status)
      assert.is_nil(v.body)
      assert.is_nil(v.aborted)
      -- 100 ms between chunks: delivered as they come, never as one blob
      assert.is_true(v.n >= 2 and v.n <= 4, "chunk count " .. v.n)
    end)

    it("a slow consumer (sleeping in the callback) still gets everything", function()
      local v = value_of([[
        local chunks, total = {}, 0
        local r = assert(http.request{
          url = U .. "/chunked?n=30&size=1000",
          stream = function(chunk)
            chunks[#chunks + 1] = chunk
            total = total + #chunk
            sleep(20)
          end,
        })
        emit({total = total, all = table.concat(chunks), status = r.status})
      ]])
      local want = {}
      for i = 0, 29 do want[#want + 1] = string.rep(tostring(i % 10), 1000) end
      assert.equals(30000, v.total)
      assert.equals(table.concat(want), v.all)
      assert.equals(200, v.status)
    end)

    it("a slow consumer of a body far above the memory cap gets it all (back-pressure)", function()
      local v = value_of([[
        local total, calls, bad = 0, 0, 0
        local r = assert(http.request{
          url = U .. "/bytes/40000000",
          stream = function(chunk)
            calls = calls + 1
            total = total + #chunk
            if chunk:find("[^x]") then bad = bad + 1 end
            if calls % 8 == 0 then sleep(1) end
          end,
        })
        emit({total = total, bad = bad, status = r.status, many = calls > 1})
      ]], {flags = {"--memory-limit", "8M"}})
      assert.same({total = 40000000, bad = 0, status = 200, many = true}, v)
    end)

    it("returning false stops the transfer and sets aborted", function()
      local v = value_of([[
        local calls, total = 0, 0
        local r, err = http.request{
          url = U .. "/chunked?n=50&size=10&delay=50",
          stream = function(chunk)
            calls = calls + 1
            total = total + #chunk
            if calls == 2 then return false end
          end,
        }
        emit({calls = calls, err = err, status = r and r.status, aborted = r and r.aborted,
              short = total < 500})
      ]])
      assert.same({calls = 2, status = 200, aborted = true, short = true}, v)
    end)

    it("returning false sets aborted even when the whole body had already arrived", function()
      local why = H.known_bug("callback_returned() in host/mod_http.c ignores `false` once curl is done",
        function()
          local v = value_of([[
            local calls = 0
            local r = assert(http.request{
              url = U .. "/bytes/100000",
              stream = function(chunk) calls = calls + 1 return false end,
            })
            emit({calls = calls, aborted = r.aborted})
          ]])
          assert.same({calls = 1, aborted = true}, v)
        end)
      if why then pending(why) end
    end)

    it("an error in the callback propagates as a runtime error of the script", function()
      local res = run(table.concat({
        "http.request{",                                         -- 2
        "  url = U .. '/chunked?n=5&size=3&delay=20',",           -- 3
        "  stream = function(chunk) error('callback boom') end,", -- 4
        "}",                                                     -- 5
        "print('not reached')",                                  -- 6
      }, "\n"))
      local err = H.fails(res)
      assert.matches("^script%.lua:4: callback boom\n", err)
      assert.matches("stack traceback:", err, 1, true)
      assert.not_matches("not reached", res.stdout, 1, true)
    end)

    it("a callback error can be caught with pcall, and later requests still work", function()
      local v = value_of([[
        local ok, e = pcall(http.request, {
          url = U .. "/chunked?n=5&size=3&delay=20",
          stream = function() error("caught boom") end,
        })
        local r = assert(http.get(U .. "/hello"))
        emit({ok = ok, e = tostring(e), after = r.body})
      ]])
      assert.is_false(v.ok)
      assert.matches("caught boom", v.e, 1, true)
      assert.equals("hello world\n", v.after)
    end)
  end)

  describe("sse callback", function()
    it("parses events: names, multi-line data, CRLF, ids and retry", function()
      local v = value_of([[
        local events = {}
        local r = assert(http.request{
          url = U .. "/sse?n=3&delay=10",
          sse = function(ev) events[#events + 1] = ev end,
        })
        emit({events = events, status = r.status, body = r.body,
              ctype = r.headers["content-type"]})
      ]])
      assert.equals(200, v.status)
      assert.is_nil(v.body)
      assert.equals("text/event-stream", v.ctype)
      assert.same({
        {event = "greeting", data = "first line\nsecond line", id = "1"},
        {event = "message", data = "crlf", id = "1"},
        {event = "tick", data = '{"i":0}', id = "2", retry = 1500},
        {event = "tick", data = '{"i":1}', id = "3", retry = 1500},
        {event = "tick", data = '{"i":2}', id = "4", retry = 1500},
      }, v.events)
    end)

    it("returning false stops the stream and sets aborted (sse and sse_data)", function()
      for _, callback in ipairs{"sse = function(ev) n = n + 1 if ev.event == 'tick' then return false end end",
                                "sse_data = function(data, event) n = n + 1 if event == 'tick' then return false end end"} do
        local v = value_of([[
          local n = 0
          local r = assert(http.request{url = U .. "/sse?n=100&delay=50", ]] .. callback .. [[})
          emit({n = n, aborted = r.aborted})
        ]])
        assert.same({n = 3, aborted = true}, v)
      end
    end)

    it("returning false stops delivery even when the stream had already ended", function()
      local why = H.known_bug("callback_returned() in host/mod_http.c ignores `false` once curl is done," ..
                              " so buffered events keep coming and aborted stays nil",
        function()
          local v = value_of([[
            local n = 0
            local r = assert(http.request{
              url = U .. "/sse?n=1",
              sse = function(ev) n = n + 1 return false end,
            })
            emit({n = n, aborted = r.aborted})
          ]])
          assert.same({n = 1, aborted = true}, v)
        end)
      if why then pending(why) end
    end)

    it("an error in the sse callback propagates", function()
      local res = run([[
        http.request{url = U .. "/sse?n=2", sse = function(ev) error("sse boom") end}
      ]])
      assert.matches("script%.lua:2: sse boom", H.fails(res))
    end)

    it("a non-2xx answer skips the callback and returns the body", function()
      local v = value_of([[
        local n = 0
        local r = assert(http.request{
          url = U .. "/status/500",
          sse = function(ev) n = n + 1 end,
        })
        emit({n = n, status = r.status, body = r.body})
      ]])
      assert.same({n = 0, status = 500, body = "status 500\n"}, v)
    end)
  end)

  describe("sse_data callback", function()
    it("gets each event's data and name as two strings, no table", function()
      local v = value_of([[
        local events = {}
        local r = assert(http.request{
          url = U .. "/sse?n=2",
          sse_data = function(data, event, more)
            events[#events + 1] = {data = data, event = event, more = more == nil and "none" or type(more)}
          end,
        })
        emit({events = events, status = r.status})
      ]])
      assert.equals(200, v.status)
      assert.same({
        {event = "greeting", data = "first line\nsecond line", more = "none"},
        {event = "message", data = "crlf", more = "none"},
        {event = "tick", data = '{"i":0}', more = "none"},
        {event = "tick", data = '{"i":1}', more = "none"},
      }, v.events)
    end)

    it("is one of stream, sse and sse_data, and a function", function()
      local res = run([[
        http.request{url = U .. "/sse?n=1", sse = function() end, sse_data = function() end}
      ]])
      assert.matches("give only one of 'stream', 'sse' and 'sse_data'", H.fails(res), 1, true)
      res = run([[http.request{url = U .. "/sse?n=1", sse_data = "no"}]])
      assert.matches("sse_data as a function expected", H.fails(res), 1, true)
    end)
  end)

  describe("failures are error values", function()
    local function failure(code)
      return value_of("local r, msg, detail = " .. code .. "\n" ..
                      "emit({r = r, msg = msg, detail_type = type(detail)})")
    end

    it("timeout: a response slower than `timeout`", function()
      local v = failure([[http.request{url = U .. "/slow?ms=10000", timeout = 200}]])
      assert.same({msg = "timeout", detail_type = "string"}, v)
    end)

    it("idle timeout: a server that stops sending", function()
      local v = failure([[http.request{url = U .. "/stall", idle_timeout = 200}]])
      assert.same({msg = "idle timeout", detail_type = "string"}, v)
    end)

    it("idle_timeout does not stop a stream that keeps sending", function()
      local v = value_of([[
        local r, err = http.request{url = U .. "/chunked?n=4&size=2&delay=50", idle_timeout = 5000}
        emit({body = r and r.body, err = err})
      ]])
      assert.same({body = "00112233"}, v)
    end)

    it("idle_timeout does not blame the server for a slow consumer", function()
      local v = value_of([[
        local total = 0
        local r, err = http.request{
          url = U .. "/chunked?n=3&size=2000000",
          idle_timeout = 100,
          stream = function(chunk) total = total + #chunk sleep(300) end,
        }
        emit({total = total, status = r and r.status, err = err})
      ]])
      assert.same({total = 6000000, status = 200}, v)
    end)

    it("connection refused: nothing listens on the port", function()
      local v = failure(string.format("http.get('http://127.0.0.1:%d/')", closed_port()))
      assert.same({msg = "connection refused", detail_type = "string"}, v)
    end)

    it("the server closes mid-body", function()
      local v = failure([[http.get(U .. "/close-early")]])
      assert.same({msg = "connection closed before the response was complete", detail_type = "string"}, v)
    end)

    it("the server closes without answering", function()
      local v = failure([[http.get(U .. "/drop")]])
      assert.same({msg = "connection closed without a response", detail_type = "string"}, v)
    end)

    it("max_body: a body over the limit", function()
      local v = failure([[http.request{url = U .. "/bytes/100000", max_body = 1000}]])
      assert.same({msg = "response body too large", detail_type = "string"}, v)
      local ok = value_of([[emit(#assert(http.request{url = U .. "/bytes/1000", max_body = 1000}).body)]])
      assert.equals(1000, ok)
    end)

    it("a body larger than the sandbox's memory cap is an error value, not a crash", function()
      local res = run([[
        local r, msg = http.get(U .. "/bytes/20000000")
        local after = http.get(U .. "/hello")
        emit({r = r, msg = msg, after = after and after.body})
      ]], {flags = {"--memory-limit", "8M"}})
      H.ok(res)
      local v = res.values[1]
      assert.is_nil(v.r)
      assert.matches("memory limit", v.msg, 1, true)
      assert.equals("hello world\n", v.after)
    end)

    it("one failing request among concurrent ones fails alone", function()
      local v = value_of([[
        local out, done = {}, 0
        for i = 1, 10 do
          coroutine.wrap(function()
            local path = i % 2 == 0 and "/drop" or "/hello"
            local r, err = http.get(U .. path)
            out[i] = r and r.body or err
            done = done + 1
          end)()
        end
        while done < 10 do sleep(5) end
        emit(out)
      ]])
      for i = 1, 10 do
        assert.equals(i % 2 == 0 and "connection closed without a response" or "hello world\n", v[i])
      end
    end)
  end)

  describe("misuse raises", function()
    it("a url that is not http or https", function()
      local v = value_of([[
        local out = {}
        for _, u in ipairs({"file:///etc/passwd", "ftp://127.0.0.1/", "gopher://x"}) do
          local ok, e = pcall(http.get, u)
          out[#out + 1] = {ok = ok, e = tostring(e)}
        end
        emit(out)
      ]])
      for _, c in ipairs(v) do
        assert.is_false(c.ok)
        assert.matches("url must start with http:// or https://", c.e, 1, true)
        assert.not_matches("root:", c.e, 1, true)
      end
    end)

    it("an uncaught bad scheme fails the script with the message", function()
      local res = run('local r = http.get("file:///etc/passwd")\nprint(r and r.body)')
      local err = H.fails(res)
      assert.matches("script%.lua:2: http: url must start with http:// or https://", err)
      assert.not_matches("root:", res.stdout, 1, true)
    end)

    it("header injection: line breaks in names or values", function()
      local v = value_of([[
        local out = {}
        for _, h in ipairs({
          {["X-A"] = "v\r\nX-Injected: 1"},
          {["X-A"] = "v\nX-Injected: 1"},
          {["X-A\r\nX-Injected"] = "1"},
          {["X-A: b"] = "c"},
        }) do
          local ok, e = pcall(http.get, U .. "/echo", {headers = h})
          out[#out + 1] = {ok = ok, e = tostring(e)}
        end
        emit(out)
      ]])
      assert.equals(4, #v)
      for _, c in ipairs(v) do
        assert.is_false(c.ok)
        assert.matches("bad name or a line break", c.e, 1, true)
      end
    end)

    it("a method that is not a token", function()
      local v = value_of([[
        emit({pcall(http.request, {url = U .. "/echo", method = "GET /x HTTP/1.1\r\nX: y"})})
      ]])
      assert.is_false(v[1])
      assert.matches("method", v[2], 1, true)
    end)
  end)

  describe("default request headers", function()
    it("sends no User-Agent or Accept-Encoding unless asked", function()
      local v = value_of([[
        local plain = assert(http.get(U .. "/echo")).body
        local asked = assert(http.get(U .. "/echo", {compressed = true, headers = {["User-Agent"] = "me/1"}})).body
        emit({plain_ua = plain:find('"user-agent"', 1, true) ~= nil,
              plain_ae = plain:find('"accept-encoding"', 1, true) ~= nil,
              ua = asked:match('"user%-agent":"([^"]*)"'),
              ae = asked:find('"accept%-encoding":"[^"]*gzip') ~= nil})
      ]])
      assert.same({plain_ua = false, plain_ae = false, ua = "me/1", ae = true}, v)
    end)
  end)

  describe("regressions", function()
    it("a coroutine that yielded inside a stream callback cannot continue after its run ended", function()
      local v = value_of([[
        local X
        task.spawn(function()
          X = coroutine.create(function()
            http.request{url = U .. "/chunked?n=5&size=10&delay=10", stream = function() coroutine.yield() end}
          end)
          coroutine.resume(X)
        end):wait()
        local ok, err = coroutine.resume(X)
        emit({ok = ok, err = tostring(err)})
      ]])
      assert.is_false(v.ok)
      assert.matches("cancelled", v.err, 1, true)
    end)

    it("options are read raw, once: __index cannot change them between check and use", function()
      local v = value_of([[
        local calls = 0
        local opts = setmetatable({url = U .. "/echo"}, {__index = function(_, k)
          calls = calls + 1
          if k == "headers" then
            if calls == 1 then return {["X-A"] = "ok"} end
            return {["X-A"] = "ok\r\nX-Injected: yes"}
          end
        end})
        local r = assert(http.request(opts))
        emit({injected = r.body:find("x-injected", 1, true) ~= nil, has_a = r.body:find('"x-a"', 1, true) ~= nil,
              calls = calls})
      ]])
      assert.same({injected = false, has_a = false, calls = 0}, v)
    end)

    it("a request waiting its turn behind the per-origin cap is not idle", function()
      local v = value_of([[
        local ts = {}
        for i = 1, 70 do
          ts[i] = task.spawn(function()
            local r, e = http.get(U .. "/chunked?n=4&size=10&delay=200", {idle_timeout = 500})
            return r and r.status or e
          end)
        end
        local seen = {}
        for i = 1, 70 do local _, v = task.wait(ts[i]) seen[tostring(v)] = (seen[tostring(v)] or 0) + 1 end
        emit(seen)
      ]])
      assert.same({["200"] = 70}, v)
    end)
  end)

  describe("concurrency and connections", function()
    it("1000 concurrent requests from 1000 tasks all succeed over at most 64 connections", function()
      local v = value_of([[
        local function stats()
          local r = assert(http.get(U .. "/stats"))
          return tonumber(r.body:match('"connections":(%d+)')), tonumber(r.body:match('"requests":(%d+)'))
        end
        local c0, q0 = stats()
        local tasks = {}
        for i = 1, 1000 do
          tasks[i] = task.spawn(function()
            local r, err = http.get(U .. "/hello?i=" .. i)
            if r and r.status == 200 and r.body == "hello world\n" then return true end
            return false, tostring(err)
          end)
        end
        local ok, errs = 0, {}
        for i = 1, 1000 do
          local _, good, err = task.wait(tasks[i])
          if good then ok = ok + 1 else errs[#errs + 1] = err end
        end
        local c1, q1 = stats()
        emit({ok = ok, errs = errs, conns = c1 - c0, reqs = q1 - q0})
      ]])
      assert.same({}, v.errs)
      assert.equals(1000, v.ok)
      assert.is_true(v.reqs >= 1000, "server saw " .. v.reqs .. " requests")
      -- concurrent: more than one connection was needed; capped: never more than 64 (+1 for the probe)
      assert.is_true(v.conns > 1, "only " .. v.conns .. " connection: the requests did not overlap")
      assert.is_true(v.conns <= 65, "opened " .. v.conns .. " connections for 1000 requests")
    end)

    it("coroutines run one after another: a wrapped coroutine that waits suspends its caller", function()
      local v = value_of([[
        local order = {}
        for i = 1, 3 do
          coroutine.wrap(function()
            sleep(30 - i * 10)
            order[#order + 1] = i
          end)()
        end
        emit(order)
      ]])
      assert.same({1, 2, 3}, v)
    end)

    it("sequential requests reuse one connection", function()
      local before = stats()
      local v = value_of([[
        local n = 0
        for i = 1, 20 do
          local r = assert(http.get(U .. "/hello"))
          if r.status == 200 then n = n + 1 end
        end
        emit(n)
      ]])
      assert.equals(20, v)
      local after = stats()
      -- the script's one connection, plus the one of the stats() probe
      assert.equals(2, after.connections - before.connections)
      assert.equals(21, after.requests - before.requests)
    end)

    it("http works inside a coroutine inside a pcall", function()
      local v = value_of([[
        local ok, body = pcall(function()
          return coroutine.wrap(function()
            local r = assert(http.get(U .. "/hello"))
            sleep(5)
            return r.body
          end)()
        end)
        emit({ok = ok, body = body})
      ]])
      assert.same({ok = true, body = "hello world\n"}, v)
    end)

    it("a coroutine can yield to its caller between requests", function()
      local v = value_of([[
        local gen = coroutine.wrap(function()
          for _, s in ipairs({201, 202, 404}) do
            coroutine.yield(assert(http.get(U .. "/status/" .. s)).status)
          end
          return "end"
        end)
        emit({gen(), gen(), gen(), gen()})
      ]])
      assert.same({201, 202, 404, "end"}, v)
    end)

    it("coroutine.resume of a coroutine that makes requests", function()
      local v = value_of([[
        local co = coroutine.create(function(path)
          local r = assert(http.get(U .. path))
          local x = coroutine.yield(r.status)
          return x .. (assert(http.get(U .. "/hello")).body)
        end)
        local a = {coroutine.resume(co, "/status/418")}
        local b = {coroutine.resume(co, "got ")}
        emit({a = a, b = b, st = coroutine.status(co)})
      ]])
      assert.same({a = {true, 418}, b = {true, "got hello world\n"}, st = "dead"}, v)
    end)
  end)

  describe("limits", function()
    it("the deadline interrupts a request in flight", function()
      local res = run([[
        local r, err = http.get(U .. "/slow?ms=30000")
        print("returned", r, err)
      ]], {flags = {"--deadline", "300ms"}})
      local err = H.fails(res)
      assert.matches("deadline of 300 ms exceeded", err, 1, true)
      assert.not_matches("returned", res.stdout, 1, true)
    end)

    it("pcall around a request cannot swallow the deadline", function()
      local res = run([[
        local ok, e = pcall(http.get, U .. "/slow?ms=30000")
        print("after")
      ]], {flags = {"--deadline", "300ms"}})
      assert.matches("deadline of 300 ms exceeded", H.fails(res), 1, true)
      assert.not_matches("after", res.stdout, 1, true)
    end)

    it("the server is still fine afterwards", function()
      local v = value_of([[emit(assert(http.get(U .. "/hello")).body)]])
      assert.equals("hello world\n", v)
    end)
  end)
end)
