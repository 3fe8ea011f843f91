-- HTTP/2 where the server offers it: a TLS server (nghttpd, from Debian's
-- nghttp2-server) negotiates h2 by ALPN, and concurrent requests from many
-- tasks share one multiplexed connection. The server's certificate is made
-- here with openssl and trusted through MOONHIVE_CA_FILE.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local uv = require "luv"

describe("http over HTTP/2", function()
  local dir, port, server, log_path

  lazy_setup(function()
    dir = H.tmpdir()
    H.write(dir .. "/index.html", "hello h2\n")
    local gen = H.exec("/usr/bin/openssl", {"req", "-x509", "-newkey", "rsa:2048", "-nodes",
      "-keyout", dir .. "/key.pem", "-out", dir .. "/cert.pem", "-days", "2",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"})
    assert(gen.code == 0, H.show(gen))
    -- a free port: bind one, close it, give it to nghttpd
    local probe = uv.new_tcp()
    probe:bind("127.0.0.1", 0)
    port = probe:getsockname().port
    probe:close()
    H.flush()
    log_path = dir .. "/nghttpd.log"
    local log = io.open(log_path, "w")
    log:close()
    server = uv.spawn("/bin/sh", {args = {"-c", "exec nghttpd -v -d '" .. dir .. "' " .. port .. " '"
      .. dir .. "/key.pem' '" .. dir .. "/cert.pem' > '" .. log_path .. "' 2>&1"}}, function() end)
    assert(server, "cannot start nghttpd (make deps installs nghttp2-server)")
    -- wait until it accepts connections
    assert(H.wait_until(function()
      local r = H.eval("return (select(2, http.get('https://127.0.0.1:" .. port .. "/')))",
                       {env = {MOONHIVE_CA_FILE = dir .. "/cert.pem"}})
      return r.code == 0 and not r.stdout:match("connection refused")
    end, 10000), "nghttpd did not start")
  end)

  lazy_teardown(function()
    if server then server:kill("sigterm") server:close() end
    H.flush()
    H.cleanup()
  end)

  it("multiplexes 50 concurrent requests over one connection", function()
    local before = select(2, (H.read(log_path) or ""):gsub("recv SETTINGS frame <length=%d+, flags=0x00", ""))
    local res = H.eval(([[
      local ts = {}
      for i = 1, 50 do
        ts[i] = task.spawn(function()
          local r, e = http.get("https://127.0.0.1:%d/index.html")
          return r and (r.http_version .. " " .. r.body) or e
        end)
      end
      local seen = {}
      for i = 1, 50 do
        local _, v = task.wait(ts[i])
        seen[v] = (seen[v] or 0) + 1
      end
      return seen
    ]]):format(port), {env = {MOONHIVE_CA_FILE = dir .. "/cert.pem"}})
    local out = H.ok(res)
    assert.matches('["2 hello h2\\n"] = 50', out, 1, true)
    -- each new connection sends one non-ACK SETTINGS frame to the server
    local after = select(2, (H.read(log_path) or ""):gsub("recv SETTINGS frame <length=%d+, flags=0x00", ""))
    assert.equals(1, after - before)
  end)

  it("refuses a certificate it does not trust", function()
    local out = H.ok(H.eval(("return http.get('https://127.0.0.1:%d/index.html')"):format(port)))
    assert.matches("nil\tTLS certificate verification failed", out, 1, true)
  end)
end)
