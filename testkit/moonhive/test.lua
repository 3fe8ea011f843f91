-- moonhive.test — the fixture for testing agents and scripts with busted
-- (`moonhive test` puts it on the Lua path; docs/testing.md).
--
--   local mh = require "moonhive.test"
--   local model = mh.mock_model()
--   model:reply("text" [, {agent=, when=}])              -- a turn that answers
--   model:tool_call("name", {args} [, {agent=, when=}])   -- a turn that asks for one tool
--   model:tool_calls({{"name", {args}}, ...} [, opts])    -- several tools in one turn
--   model:fail("message" [, opts])                        -- a turn whose call fails
--   local res = mh.run_agent("agents/x.lua" | "x", "the task", {model = model})
--   res.ok, res.output, res.error, res.tool_calls, res.tool_names(), res.requests, res.events
--   local r = mh.run_script("scripts/y.lua", {"arg1"}, {model = model})
--
-- Each run is the real moonhive binary ($MOONHIVE_BIN, else `moonhive` on
-- PATH) started in the project ($MOONHIVE_PROJECT, else the working
-- directory) with a fresh data directory, no provider keys, and the model's
-- replies in a file the runtime's mock reads (MOONHIVE_MOCK_SCRIPT); every
-- request the model received comes back from MOONHIVE_MOCK_LOG. Plain Lua
-- 5.3+ (what busted runs on); JSON through moonhive's own stdlib/json.lua.

local _M = {}

local function getenv(name)
  local v = os.getenv(name)
  if v and v ~= "" then return v end
  return nil
end

local here = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "."

_M.bin = getenv("MOONHIVE_BIN") or "moonhive"
_M.project = getenv("MOONHIVE_PROJECT") or "."

local json
do
  local stdlib = getenv("MOONHIVE_STDLIB") or (here .. "/../../stdlib")
  local chunk, err = loadfile(stdlib .. "/json.lua")
  if not chunk then
    error("moonhive.test: cannot load moonhive's json.lua from " .. stdlib .. " (set MOONHIVE_STDLIB): " ..
          tostring(err), 0)
  end
  json = chunk()
end
_M.json = json

-- ---- files and processes ----

local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function tmpdir()
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/moonhive-test-XXXXXX\"")
  local dir = p and p:read("l")
  if p then p:close() end
  if not dir or dir == "" then error("moonhive.test: cannot create a temporary folder (mktemp -d)", 0) end
  return dir
end

local function trim(s)
  return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Runs `moonhive ARGS...` in the project with env (a list of NAME=VALUE);
-- returns code, stdout, stderr.
local function moonhive(dir, env, args)
  local words = { "cd", quote(_M.project), "&&", "env", "-u", "OPENAI_API_KEY", "-u", "ANTHROPIC_API_KEY" }
  for _, kv in ipairs(env) do words[#words + 1] = quote(kv) end
  words[#words + 1] = quote(_M.bin)
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local out, err, rc = dir .. "/stdout", dir .. "/stderr", dir .. "/status"
  os.execute(("(%s) >%s 2>%s </dev/null; echo $? >%s"):format(table.concat(words, " "), quote(out), quote(err),
                                                         quote(rc)))
  return tonumber(read(rc)) or -1, read(out) or "", read(err) or ""
end

-- ---- the mock model ----

local Model = {}
Model.__index = Model

function _M.mock_model()
  return setmetatable({ replies = {}, requests = {} }, Model)
end

local function turn(model, reply, opts)
  if opts ~= nil and type(opts) ~= "table" then error("moonhive.test: opts must be a table {agent=, when=}", 3) end
  reply.agent = opts and opts.agent
  reply.when = opts and opts.when
  model.replies[#model.replies + 1] = reply
  return model
end

-- A turn that answers with text.
function Model:reply(text, opts)
  if type(text) ~= "string" then error("moonhive.test: model:reply(text) needs a string", 2) end
  return turn(self, { content = text }, opts)
end

local function call_of(name, args, where)
  if type(name) ~= "string" or name == "" then error("moonhive.test: " .. where .. " needs a tool name", 3) end
  if args ~= nil and type(args) ~= "table" then error("moonhive.test: " .. where .. ": arguments must be a table", 3) end
  return { name = name, arguments = json.encode(args or {}) }
end

-- A turn that asks for one tool.
function Model:tool_call(name, args, opts)
  return turn(self, { tool_calls = { call_of(name, args, "model:tool_call") } }, opts)
end

-- A turn that asks for several tools at once: {{"name", {args}}, {name =, arguments =}, ...}.
function Model:tool_calls(calls, opts)
  if type(calls) ~= "table" or #calls == 0 then error("moonhive.test: model:tool_calls needs a list of calls", 2) end
  local list = {}
  for i, c in ipairs(calls) do
    list[i] = call_of(c.name or c[1], c.arguments or c[2], "model:tool_calls")
  end
  return turn(self, { tool_calls = list }, opts)
end

-- A turn whose model call fails with message.
function Model:fail(message, opts)
  return turn(self, { error = tostring(message) }, opts)
end

-- How many replies the last run left unused.
function Model:remaining()
  local taken = {}
  for _, r in ipairs(self.requests) do if r.reply then taken[r.reply] = true end end
  local n = 0
  for i = 1, #self.replies do if not taken[i] then n = n + 1 end end
  return n
end

local function read_requests(path)
  local out = {}
  for line in (read(path) or ""):gmatch("[^\n]+") do
    out[#out + 1] = json.decode(line) or { error = "unreadable log line: " .. line }
  end
  return out
end

-- A run's scratch folder, the script the mock will read and the env naming it.
local function prepare(opts)
  if opts ~= nil and type(opts) ~= "table" then error("moonhive.test: opts must be a table", 3) end
  opts = opts or {}
  local model = opts.model or _M.mock_model()
  if getmetatable(model) ~= Model then error("moonhive.test: opts.model must come from mh.mock_model()", 3) end
  local dir = tmpdir()
  write(dir .. "/script.json", json.encode(model.replies))
  local env = { "MOONHIVE_DATA=" .. (opts.data_dir or dir .. "/data"), "MOONHIVE_MOCK_SCRIPT=" .. dir .. "/script.json",
                "MOONHIVE_MOCK_LOG=" .. dir .. "/requests.jsonl" }
  local names = {}
  for k in pairs(opts.env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do env[#env + 1] = k .. "=" .. tostring(opts.env[k]) end
  return dir, env, model, opts
end

local function finish(dir, model)
  model.requests = read_requests(dir .. "/requests.jsonl")
  os.execute("rm -rf " .. quote(dir))
  return model.requests
end

-- ---- results ----

-- Tool calls from a run's events: each tool_call with its tool_result, in
-- the order they were asked for; a call the agent refused (no such tool)
-- has only its result.
local function tool_calls_of(events)
  local calls, open = {}, {}
  for _, ev in ipairs(events) do
    local d = type(ev.data) == "table" and ev.data or {}
    if ev.kind == "tool_call" then
      local c = { id = d.id, name = d.name, arguments = d.arguments, agent = ev.agent }
      calls[#calls + 1] = c
      open[#open + 1] = c
    elseif ev.kind == "tool_result" then
      local c
      for i, o in ipairs(open) do
        if o.id == d.id and o.name == d.name and o.agent == ev.agent then
          c = table.remove(open, i)
          break
        end
      end
      if not c then
        c = { id = d.id, name = d.name, agent = ev.agent }
        calls[#calls + 1] = c
      end
      c.ok = d.ok == true
      if c.ok then c.result = d.result else c.error = d.result end
    end
  end
  return calls
end

local function last_json_line(text)
  local found
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then found = line end
  end
  return found and json.decode(found)
end

local function flags_of(opts)
  local args = {}
  for _, f in ipairs(opts.flags or {}) do args[#args + 1] = tostring(f) end
  return args
end

-- Runs an agent file (or agents/NAME.lua for a bare name) with the task
-- `input`, answered by opts.model. opts: model, flags (moonhive run options,
-- {"--deadline", "5s"}), env (extra variables), data_dir (keep state between
-- runs). Returns
--   {ok=, status=, output=, error=, run_id=, agent=, iterations=, usage=,
--    tool_calls = {{name=, arguments=, ok=, result=|error=, agent=, id=}},
--    tool_names = function() -> {"name", ...}, events=, requests=,
--    code=, stdout=, stderr=}
function _M.run_agent(file, input, opts)
  if type(file) ~= "string" or file == "" then error("moonhive.test: run_agent needs an agent file or name", 2) end
  if type(input) ~= "string" then error("moonhive.test: run_agent needs the task as a string", 2) end
  if not file:find("/", 1, true) and not file:match("%.lua$") then file = "agents/" .. file .. ".lua" end
  local dir, env, model
  dir, env, model, opts = prepare(opts)
  local args = { "run", "--json" }
  for _, f in ipairs(flags_of(opts)) do args[#args + 1] = f end
  args[#args + 1] = file
  args[#args + 1] = input
  local code, stdout, stderr = moonhive(dir, env, args)
  local res = last_json_line(stdout) or {}
  res.code, res.stdout, res.stderr = code, stdout, stderr
  res.ok = code == 0 and res.status == "succeeded"
  if not res.ok and not res.error then
    res.error = trim(stderr) ~= "" and trim(stderr) or ("moonhive exited with status %d"):format(code)
  end
  res.events = {}
  if res.run_id then
    local c, out, err = moonhive(dir, env, { "runs", "show", res.run_id, "--json" })
    local shown = c == 0 and json.decode(out)
    if not shown then error("moonhive.test: cannot read the run's events: " .. trim(err), 2) end
    res.events = shown.events or {}
  end
  res.tool_calls = tool_calls_of(res.events)
  res.tool_names = function()
    local names = {}
    for i, c in ipairs(res.tool_calls) do names[i] = c.name end
    return names
  end
  res.requests = finish(dir, model)
  return res
end

-- Runs a sandboxed script with the arguments in `args` (a list), answered by
-- opts.model (opts as for run_agent). Returns {ok=, code=, stdout=, stderr=,
-- error= (the stderr of a failed run), requests=}.
function _M.run_script(file, args, opts)
  if type(file) ~= "string" or file == "" then error("moonhive.test: run_script needs a script file", 2) end
  if args ~= nil and type(args) ~= "table" then error("moonhive.test: run_script's arguments must be a list", 2) end
  local dir, env, model
  dir, env, model, opts = prepare(opts)
  local argv = { "run" }
  for _, f in ipairs(flags_of(opts)) do argv[#argv + 1] = f end
  argv[#argv + 1] = file
  for _, a in ipairs(args or {}) do argv[#argv + 1] = tostring(a) end
  local code, stdout, stderr = moonhive(dir, env, argv)
  local res = { ok = code == 0, code = code, stdout = stdout, stderr = stderr }
  if not res.ok then res.error = trim(stderr) end
  res.requests = finish(dir, model)
  return res
end

return _M
