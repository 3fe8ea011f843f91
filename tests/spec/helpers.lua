-- helpers.lua — shared code for the busted specs that drive the real binaries.
--
-- Load it from a spec with
--   local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
-- (the path is taken from the spec's own file, so only the repo root matters).
--
-- Environment (set by tests/run.sh; defaults let `busted tests/spec` work by hand
-- from the repo root):
--   MOONHIVE_ROOT  repo root                 (default: derived from this file)
--   MOONHIVE_BIN   the binary under test     (default: <root>/moonhive)
--   TESTSERVER     the HTTP test server      (default: <root>/build/release/tools/testserver)
--   MOONHIVE_DATA  the product's data dir    (default: a temp dir made here)
--
-- Processes are run with lua-luv (argument vectors, no shell quoting), with
-- separate stdout/stderr capture and a bound on how long we wait for them.
local uv = require "luv"

local H = {}

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return uv.cwd() .. "/" .. p
end

local this_file = uv.fs_realpath(absolute((debug.getinfo(1, "S").source:gsub("^@", ""))))
H.root = os.getenv("MOONHIVE_ROOT") or dirname(dirname(dirname(this_file)))
H.bin = absolute(os.getenv("MOONHIVE_BIN") or (H.root .. "/moonhive"))
H.testserver = absolute(os.getenv("TESTSERVER") or (H.root .. "/build/release/tools/testserver"))
H.mockllm = absolute(os.getenv("MOCKLLM") or (H.testserver:gsub("testserver$", "mockllm")))

-- Upper bound on any one wait (a hung child fails its spec instead of the run).
H.WAIT_MS = tonumber(os.getenv("SPEC_WAIT_MS")) or 120000

-- ---------------------------------------------------------------- temp files

local tmp_base = os.getenv("TMPDIR") or "/tmp"
local made = {}

-- A fresh empty directory, removed by H.cleanup().
function H.tmpdir()
  local d = assert(uv.fs_mkdtemp(tmp_base .. "/moonhive-spec-XXXXXX"))
  made[#made + 1] = d
  return d
end

local function rmtree(path)
  local st = uv.fs_lstat(path)
  if not st then return end
  if st.type == "directory" then
    local req = uv.fs_scandir(path)
    if req then
      for name in uv.fs_scandir_next, req do rmtree(path .. "/" .. name) end
    end
    uv.fs_rmdir(path)
  else
    uv.fs_unlink(path)
  end
end
H.rmtree = rmtree

function H.cleanup()
  for i = #made, 1, -1 do rmtree(made[i]) made[i] = nil end
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The product's data directory: the runner's, or one of ours.
local data_dir = os.getenv("MOONHIVE_DATA")
if not data_dir or data_dir == "" then
  data_dir = assert(uv.fs_mkdtemp(tmp_base .. "/moonhive-data-XXXXXX"))
  made[#made + 1] = data_dir
end
H.data_dir = data_dir

-- ---------------------------------------------------------------- processes

-- Variables that change the product's behaviour; specs set them explicitly.
local SCRUB = {
  MOONHIVE_MEMORY_LIMIT = true, MOONHIVE_CPU_LIMIT = true,
  MOONHIVE_DEADLINE = true, MOONHIVE_LOG = true,
}

local function build_env(extra)
  local env = {}
  for k, v in pairs(uv.os_environ()) do
    if not SCRUB[k] then env[k] = v end
  end
  env.MOONHIVE_DATA = data_dir
  for k, v in pairs(extra or {}) do
    if v == false then env[k] = nil else env[k] = tostring(v) end
  end
  local list = {}
  for k, v in pairs(env) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  return list
end

-- Runs one loop iteration without blocking, so close callbacks of handles
-- closed so far run now (luv crashes at exit on handles whose close
-- callback never ran).
function H.flush()
  uv.run("nowait")
end

-- Turns the loop until pred() is true or ms pass; returns pred(). pred is
-- checked at least every 50 ms, also when nothing happens on the loop (a
-- pred that asks a silent child through a process of its own).
function H.wait_until(pred, ms)
  if pred() then H.flush() return true end
  local timer, tick = uv.new_timer(), uv.new_timer()
  local expired = false
  timer:start(ms or H.WAIT_MS, 0, function() expired = true end)
  tick:start(50, 50, function() end)
  while not pred() and not expired do uv.run("once") end
  timer:stop()
  timer:close()
  tick:stop()
  tick:close()
  H.flush()
  return pred()
end

-- Runs a program to completion.
--   H.exec(path, {args...}, {env=, cwd=, stdin=, wait_ms=})
-- Returns {code=, signal=, stdout=, stderr=, timed_out=}.
function H.exec(path, args, opts)
  opts = opts or {}
  local stdin = uv.new_pipe(false)
  local stdout = uv.new_pipe(false)
  local stderr = uv.new_pipe(false)
  local out, err = {}, {}
  local res = {}
  local open = 2
  local handle, pid_or_err = uv.spawn(path, {
    args = args or {},
    cwd = opts.cwd or H.root,
    env = build_env(opts.env),
    stdio = {stdin, stdout, stderr},
  }, function(code, signal)
    res.code, res.signal = code, signal
  end)
  if not handle then
    stdin:close() stdout:close() stderr:close()
    H.flush()
    error("cannot start " .. path .. ": " .. tostring(pid_or_err))
  end
  local function reader(pipe, acc)
    pipe:read_start(function(e, chunk)
      assert(not e, e)
      if chunk then acc[#acc + 1] = chunk
      else
        pipe:read_stop()
        pipe:close()
        open = open - 1
      end
    end)
  end
  reader(stdout, out)
  reader(stderr, err)
  local stdin_closed = false
  local function close_stdin() stdin:close(function() stdin_closed = true end) end
  if opts.stdin then
    stdin:write(opts.stdin, close_stdin)
  else
    close_stdin()
  end
  local done = H.wait_until(function() return res.code ~= nil and open == 0 and stdin_closed end,
                            opts.wait_ms or H.WAIT_MS)
  if not done then
    res.timed_out = true
    if res.code == nil then handle:kill("sigkill") end
    H.wait_until(function() return res.code ~= nil end, 5000)
    if not stdout:is_closing() then stdout:close() end
    if not stderr:is_closing() then stderr:close() end
    if not stdin:is_closing() then stdin:close() end
  end
  if not handle:is_closing() then handle:close() end
  H.flush()
  res.stdout = table.concat(out)
  res.stderr = table.concat(err)
  return res
end

-- Runs moonhive with the given arguments (a list); see H.exec for opts.
function H.moonhive(args, opts)
  return H.exec(H.bin, args, opts)
end

-- Starts `moonhive ARGS` in the background (opts: env=, cwd= as H.exec);
-- see H.spawn_program.
function H.spawn(args, opts)
  return H.spawn_program(H.bin, args, opts)
end
H.start = H.spawn

-- Waits until `moonhive runs show ID` says the run's status is `status`
-- (opts: cwd=, env= as H.exec); true when it does within 10 s.
function H.wait_run_status(id, status, opts)
  local cjson = require "cjson"
  return H.wait_until(function()
    local r = H.moonhive({ "runs", "show", id, "--json" }, opts)
    return r.code == 0 and cjson.decode(r.stdout).status == status
  end, 10000)
end

-- `moonhive eval CODE` with options placed before the code.
function H.eval(code, opts)
  opts = opts or {}
  local args = {"eval"}
  for _, a in ipairs(opts.flags or {}) do args[#args + 1] = a end
  args[#args + 1] = code
  return H.moonhive(args, opts)
end

-- Writes `source` to a temp .lua file and runs it from that folder:
-- opts.flags go before the file, opts.args after it. Returns the H.exec result plus .file and .dir.
function H.run_script(source, opts)
  opts = opts or {}
  local dir = opts.dir or H.tmpdir()
  local file = dir .. "/" .. (opts.name or "script.lua")
  H.write(file, source)
  local args = {"run"}
  for _, a in ipairs(opts.flags or {}) do args[#args + 1] = a end
  -- run from the script's folder by its short name, so messages read
  -- "script.lua:3: ..." whatever the temp path
  args[#args + 1] = opts.name or "script.lua"
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local res = H.moonhive(args, {env = opts.env, cwd = opts.cwd or dir,
                                stdin = opts.stdin, wait_ms = opts.wait_ms})
  res.file, res.dir = file, dir
  return res
end

-- Describes a result for assertion messages.
function H.show(res)
  return string.format("exit=%s signal=%s%s\n--- stdout:\n%s\n--- stderr:\n%s",
    tostring(res.code), tostring(res.signal), res.timed_out and " (timed out)" or "",
    res.stdout, res.stderr)
end

-- Asserts a clean exit 0 with an empty stderr; returns stdout.
function H.ok(res)
  assert(res.code == 0 and res.signal == 0 and res.stderr == "",
         "expected success\n" .. H.show(res))
  return res.stdout
end

-- Asserts an exit with `code` (default 1); returns stderr.
function H.fails(res, code)
  code = code or 1
  assert(res.code == code, "expected exit " .. code .. "\n" .. H.show(res))
  return res.stderr
end

-- Escapes magic characters so s can be used as a literal in string.find.
function H.lit(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- For behaviour we believe is right but the product gets wrong today:
-- runs body; returns nil when it passes, or a one-line reason when it fails.
-- Specs call it as
--   local why = H.known_bug("what is wrong", function() ... end)
--   if why then pending(why) end
-- so the body keeps running, the suite stays green, and the bug stays visible.
function H.known_bug(reason, body)
  local ok, e = pcall(body)
  if ok then return nil end
  local msg = type(e) == "table" and (e.message or e[1]) or e
  return "product bug: " .. reason .. " (fails with: " ..
         tostring(msg):gsub("%s+", " "):sub(1, 300) .. ")"
end

-- ---------------------------------------------------------------- test server

-- Starts tests/tools/testserver on a free port; keeps its stdin pipe open so it
-- dies with us. Returns an object with .port, .url(path) and :stop().
function H.start_testserver(path)
  path = path or H.testserver
  local stdin = uv.new_pipe(false)
  local stdout = uv.new_pipe(false)
  local srv = {exited = false}
  local buf = ""
  local handle, e = uv.spawn(path, {
    args = {"--port", "0", "--host", "127.0.0.1"},
    cwd = H.root,
    stdio = {stdin, stdout, 2},
  }, function(code, signal)
    srv.exited, srv.code, srv.signal = true, code, signal
  end)
  if not handle then
    stdin:close() stdout:close()
    H.flush()
    error("cannot start the test server " .. path .. ": " .. tostring(e) ..
          " (build it with `make build/release/tools/testserver`)")
  end
  stdout:read_start(function(err, chunk)
    assert(not err, err)
    if chunk then buf = buf .. chunk else stdout:read_stop() end
  end)
  H.wait_until(function() return buf:match("PORT (%d+)\n") or srv.exited end, 15000)
  local port = tonumber(buf:match("PORT (%d+)\n"))
  if not port then
    handle:kill("sigterm")
    error("the test server did not report its port; output: " .. buf)
  end
  srv.port = port
  srv.base = "http://127.0.0.1:" .. port
  function srv.url(path) return srv.base .. (path or "") end
  function srv.stop()
    if not stdout:is_closing() then stdout:close() end
    if not stdin:is_closing() then stdin:close() end      -- EOF on stdin: it exits
    if not H.wait_until(function() return srv.exited end, 5000) then
      handle:kill("sigterm")
      H.wait_until(function() return srv.exited end, 5000)
    end
    if not handle:is_closing() then handle:close() end
    H.flush()
  end
  return srv
end

-- Starts tests/tools/mockllm (the mock LLM server) the same way.
function H.start_mockllm()
  return H.start_testserver(H.mockllm)
end

-- Starts a program in the background (opts: env=, cwd= as H.exec, wait_ms=).
-- p.pid, p.stdout() and p.stderr() so far, p.exited, p.kill(signal = "sigkill")
-- (also p.signal(name)), p.wait([ms]) -> {code=, signal=, stdout=, stderr=,
-- timed_out=} once it exits (killed with SIGKILL after ms, else wait_ms,
-- default 30 s).
function H.spawn_program(path, args, opts)
  opts = opts or {}
  local out, err, res = {}, {}, {}
  local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
  local p = { exited = false }
  local handle, e = uv.spawn(path, { args = args or {}, cwd = opts.cwd or H.root, env = build_env(opts.env),
                                     stdio = { nil, stdout, stderr } },
                             function(code, sig) res.code, res.signal, p.exited = code, sig, true end)
  if not handle then
    stdout:close() stderr:close()
    H.flush()
    error("cannot start " .. path .. ": " .. tostring(e))
  end
  p.pid = e
  local open = 2
  local function reader(pipe, acc)
    pipe:read_start(function(_, chunk)
      if chunk then acc[#acc + 1] = chunk else pipe:close() open = open - 1 end
    end)
  end
  reader(stdout, out)
  reader(stderr, err)
  function p.stdout() return table.concat(out) end
  function p.stderr() return table.concat(err) end
  function p.kill(signal) if res.code == nil then handle:kill(signal or "sigkill") end end
  p.signal = p.kill
  function p.wait(ms)
    if not H.wait_until(function() return res.code ~= nil and open == 0 end, ms or opts.wait_ms or 30000) then
      res.timed_out = true
      p.kill()
      H.wait_until(function() return res.code ~= nil and open == 0 end, 5000)
    end
    if not handle:is_closing() then handle:close() end
    H.flush()
    res.stdout, res.stderr = table.concat(out), table.concat(err)
    return res
  end
  return p
end

-- Starts `moonhive serve --port 0` (env: extra variables; opts.cwd, opts.args:
-- more arguments) and waits for its address. Returns the process (H.spawn)
-- with .port, .url(path), .key (the session key it printed) and .stop() ->
-- exit status after SIGTERM.
function H.start_service(env, opts)
  opts = opts or {}
  local args = { "serve", "--port", "0" }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local p = H.spawn(args, { env = env, cwd = opts.cwd })
  H.wait_until(function() return p.stdout():match("127%.0%.0%.1:(%d+)") or p.exited end, 15000)
  local port = tonumber(p.stdout():match("127%.0%.0%.1:(%d+)"))
  if not port then
    p.kill()
    p.wait()
    error("moonhive serve did not start: " .. p.stderr())
  end
  p.port = port
  p.key = p.stdout():match("#key=(mh_session_%x+)")
  function p.url(path) return "http://127.0.0.1:" .. port .. (path or "") end
  function p.stop() -- a death by the signal itself (no handler yet) is 128 + its number, not 0
    p.kill("sigterm")
    local r = p.wait()
    return (r.signal or 0) ~= 0 and 128 + r.signal or r.code
  end
  return p
end

-- curl with arguments; returns {code=, stdout=, stderr=} (H.exec).
function H.curl(args, opts)
  local full = { "-sS" }
  for _, a in ipairs(args) do full[#full + 1] = a end
  return H.exec("/usr/bin/curl", full, opts)
end

-- The requests the mock LLM server received (its /_requests log, read
-- through a moonhive eval): a list of {body = decoded request, ...}.
function H.mock_requests(srv)
  local body = H.ok(H.eval(("return assert(http.get(%q)).body"):format(srv.url("/_requests"))))
  return require("cjson").decode(body)
end

-- A project folder for specs that run agents and workflows against the mock
-- LLM server: agents/worker.lua (the source `worker`), its own data
-- directory, the server. p.dir, p.llm (the server), p.env(extra) (the
-- variables a moonhive run needs: model, key, base URL, data),
-- p.moonhive(args, extra) (run in p.dir), p.stop().
function H.mock_project(worker)
  local p = { dir = H.tmpdir() }
  uv.fs_mkdir(p.dir .. "/agents", 448)
  H.write(p.dir .. "/agents/worker.lua", worker)
  p.llm = H.start_mockllm()
  function p.env(extra)
    local e = { MOONHIVE_DATA = p.dir .. "/.moonhive", MOONHIVE_MODEL = "openai/x", OPENAI_API_KEY = "sk-test",
                OPENAI_BASE_URL = p.llm.url("/v1"), ANTHROPIC_API_KEY = false }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end
  function p.moonhive(args, extra) return H.moonhive(args, { cwd = p.dir, env = p.env(extra) }) end
  function p.stop() p.llm.stop() end
  return p
end

-- Reads /stats from the test server through a moonhive eval (the specs do
-- not speak HTTP themselves); returns {connections=, requests=, open=}.
function H.server_stats(srv)
  local res = H.eval(string.format(
    "local r = assert(http.get(%q)) return r.body", srv.url("/stats")))
  local body = H.ok(res)
  return {
    connections = tonumber(body:match('"connections":(%d+)')),
    requests = tonumber(body:match('"requests":(%d+)')),
    open = tonumber(body:match('"open":(%d+)')),
  }
end

return H
