-- workflow — durable workflows for sandboxed scripts. Also a global:
--
--   return workflow{
--     name = "review",                  -- letters, digits, _ and -
--     timeout = 600000,                 -- optional: ms for the whole run (restarts included)
--     retry = {attempts = 3},           -- optional: default retry of every wf:call/wf:tool
--     run = function(wf, input)
--       local draft = wf:call("writer", input.task)          -- agents/writer.lua
--       local ok = wf:wait_signal("approve", {timeout = 3600000})
--       return wf:call("editor", draft, {retry = {attempts = 3, backoff_ms = 500}, timeout = 60000})
--     end,
--   }
--
-- The wf object: wf.id, wf.name, wf.input, wf.memory (working memory shared
-- with the agents of wf:call, journaled with every step), and the steps
--   wf:call(agent|name, input, opts) -> output      run an agent
--   wf:tool(name, args, opts) -> result              a built-in tool (stdlib/tools/)
--   wf:parallel{fn, ...} -> {r1, r2, ...}            fan-out, fan-in
--   wf:map(list, fn(item, i), {concurrency=}) -> {fn(list[1], 1), ...}
--   wf:sleep(ms)                                     durable: a resumed run sleeps the rest
--   wf:wait_signal(name, {timeout=}) -> payload | nil, "timeout"
--   wf:now(), wf:random([m [, n]])                   recorded, so a replay sees the same
-- opts of call and tool: retry = {attempts=, backoff_ms= (or backoff=),
-- factor=, max_backoff_ms=, on = {"text", ...} | function(err) -> bool},
-- timeout = ms, compensate = function(output, err) (run if the run fails
-- later), label = a name for progress lines.
--
-- Instead of run, a workflow may give steps = {id = {agent= | tool=, ...}}:
-- a declarative graph (stdlib/workflow_graph.lua) compiled onto these same
-- steps; workflow.from_json(text, path) builds one from a JSON file.
--
-- When the workflow function raises (not a cancellation, timeout or
-- nondeterminism), the compensations of the steps that succeeded run, the
-- latest step first (by step id), their steps journaled as "c.1", "c.2",
-- ...; then workflow{on_error = function(wf, err)} with steps "e.1", ...;
-- then the run fails with the error.
--
-- Durability by deterministic replay. Each step gets an id from its place
-- in the code — "1", "2", ... in the workflow function, "3.2.1" for the
-- first step of branch 2 of the parallel/map that is step 3 — so ids do not
-- depend on which branch finishes first. A step's outcome is journaled
-- (workflows.step, committed before it returns) before the code sees it.
-- Resuming a run (moonhive runs resume) runs the function again from the
-- top on the source the run started with (and each agent a wf:call ran
-- before, on the version journaled with that call): a step whose id is journaled
-- returns its journaled result (or raises its journaled error) without
-- running; the first step that is not journaled runs for real. A journaled
-- step of another kind, name or arguments than the code now asks for fails
-- the run: "nondeterministic replay: step 3 was wf:call('coder') but is now
-- wf:tool('files')".

local agentmod = require "agent"
local toolmod = require "tool"
local graph = require "workflow_graph"

local M = {}
local Def = {}
Def.__index = Def
local Run = {}
Run.__index = Run
M.Run = Run

local POLL_MS = 100     -- waiting for a signal: how often the store is asked
local NAME = "^[%a_][%w_%-]*$"

local function fail(msg) error({ message = "workflow: " .. msg }, 0) end

-- ---- definitions ----

local RETRY_FIELDS = { attempts = true, backoff_ms = true, backoff = true, factor = true, max_backoff_ms = true,
                       on = true }

local function check_retry(r, where)
  if r == nil then return end
  if type(r) ~= "table" then fail(where .. ": 'retry' must be {attempts=, backoff_ms=, factor=, on=}") end
  for k in pairs(r) do
    if not RETRY_FIELDS[k] then
      fail(("%s: retry has an unknown field '%s' (fields: attempts, backoff_ms or backoff, factor, max_backoff_ms, on)")
        :format(where, tostring(k)))
    end
  end
  if r.attempts ~= nil and (math.type(r.attempts) ~= "integer" or r.attempts < 1) then
    fail(where .. ": retry.attempts must be a whole number >= 1")
  end
  if r.backoff ~= nil and r.backoff_ms ~= nil then fail(where .. ": give retry.backoff_ms or retry.backoff, not both") end
  for _, k in ipairs({ "backoff_ms", "backoff", "factor", "max_backoff_ms" }) do
    if r[k] ~= nil and (type(r[k]) ~= "number" or r[k] < 0) then fail(("%s: retry.%s must be a number >= 0"):format(where, k)) end
  end
  if r.on ~= nil and type(r.on) ~= "function" and type(r.on) ~= "table" then
    fail(where .. ": retry.on must be a list of texts or a function(err)")
  end
end

local function check_timeout(t, where)
  if t ~= nil and (type(t) ~= "number" or t <= 0) then fail(where .. ": 'timeout' must be milliseconds > 0") end
end

-- What a run's followers see (runs.event; "step_done" is recorded by the
-- runtime with the step's journal entry): the rare moments, not every
-- step's start or replay, nor what the run's own row says (that it
-- started, how it ended); only the end of a run that stays unfinished
-- (interrupted, for the next start to resume) is an event.
local RECORDED = { resumed = true, retry = true, waiting = true, signal = true, signal_timeout = true,
                   sleeping = true, skipped = true, loop = true, compensating = true, on_error = true,
                   finished = function(ev) return ev.status == "interrupted" end }

local function emit(self, ev)
  ev.workflow = self.name
  if self.on_event then self.on_event(ev) end
  local recorded = RECORDED[ev.kind]
  if recorded == true or (recorded and recorded(ev)) then
    local data = {}
    for k, v in pairs(ev) do if k ~= "kind" and k ~= "workflow" then data[k] = v end end
    runs.event{ kind = ev.kind, agent = self.name, data = data } -- best effort: a follower's view, not the journal
  end
end

local function build(def)
  if type(def) ~= "table" then
    fail("expected a table {name=, run=function(wf, input) ... end} or {name=, steps={...}}")
  end
  local name = def.name
  if type(name) ~= "string" or not name:match(NAME) or #name > 64 then
    fail("'name' must be letters, digits, '_' or '-' (at most 64), starting with a letter")
  end
  check_timeout(def.timeout, name)
  check_retry(def.retry, name)
  local run, on_error = def.run, def.on_error
  if def.steps ~= nil then
    if run ~= nil then fail(name .. ": give either 'run' (code) or 'steps' (a graph), not both") end
    local g = graph.compile(def, { fail = fail, retry = check_retry, timeout = check_timeout, emit = emit })
    run, on_error = g.run, g.on_error
  elseif type(run) ~= "function" then
    fail(name .. ": 'run' must be a function(wf, input) (or give 'steps', a graph)")
  end
  if on_error ~= nil and type(on_error) ~= "function" then fail(name .. ": 'on_error' must be a function(wf, err)") end
  return setmetatable({ name = name, description = def.description, fn = run, on_error = on_error,
                        timeout = def.timeout, retry = def.retry, graph = def.steps ~= nil }, Def)
end

function M.new(def)
  local ok, w = pcall(build, def)
  if ok then return w end
  if type(w) == "table" and w.message then error(w.message, 2) end
  error(w, 0)
end

function M.is_workflow(v) return getmetatable(v) == Def end

-- A graph workflow from the text of a JSON file (path names it in errors:
-- "flow.json:3: expected ',' or '}'"). Without "name", the file's name.
function M.from_json(text, path)
  path = path or "workflow.json"
  if type(text) ~= "string" then error(path .. ": cannot read the file", 0) end
  local ok, def, err = pcall(json.decode, text)
  if not ok then error(("%s: %s"):format(path, tostring(def)), 0) end
  if err then
    local what, line = err:match("^json%.decode: (.-) at line (%d+)")
    error(("%s:%s: %s"):format(path, line or "1", what or err), 0)
  end
  if type(def) ~= "table" or def.steps == nil then
    error(path .. ': a workflow file holds one object {"name": ..., "steps": {...}}', 0)
  end
  if def.name == nil then
    local base = path:match("([^/]+)%.json$")
    if base and base:match(NAME) then def.name = base end
  end
  local good, w = pcall(build, def)
  if not good then error(("%s: %s"):format(path, type(w) == "table" and w.message or tostring(w)), 0) end
  return w
end

-- ---- journal values: JSON text, exact for integers and floats ----

local function encode(v)
  if v == nil then return nil end
  return json.encode(v)
end

local function decode(text)
  if text == nil then return nil end
  local v, err = json.decode(text)
  if err then error("workflow: a journaled value is not JSON: " .. err, 0) end
  return v
end

-- v as it reads back from its journal text: decode(text) (a replay's
-- view), or v itself when that is the same thing (a string: JSON strings
-- read back exactly), without a decode's copies.
local function as_journaled(v, text)
  if type(v) == "string" then return v end
  return decode(text)
end

-- The run's working memory as journaled with each step; an empty one (most
-- runs never write it) without encoding it every time.
local EMPTY_MEMORY = json.encode({})
local function memory_text(self)
  if next(self.memory) == nil then return EMPTY_MEMORY end
  return encode(self.memory)
end

-- A short digest of a step's arguments, compared on replay.
local function digest(v)
  if v == nil then return nil end
  local ok, text = pcall(json.encode, v)
  return crypto.sha256(ok and text or tostring(v)):sub(1, 16)
end

local function describe(kind, name)
  if name then return ("wf:%s('%s')"):format(kind, name) end
  return ("wf:%s()"):format(kind)
end

-- ---- the run ----

-- Raised for what must stop the whole run (a cancellation, nondeterminism,
-- the store failing): remembered so no retry or pcall hides it.
local function fatal(self, msg)
  self.fatal = self.fatal or msg
  error(msg, 0)
end

local function check_live(self)
  if self.fatal then error(self.fatal, 0) end
  if self.status == "cancelled" then fatal(self, "workflow run cancelled") end
end

local INTERRUPTED = "interrupted: the service is shutting down; the run resumes at its next start"

-- The host is shutting down (a status answer said draining): the run stops
-- here, at a journaled point, and stays unfinished.
local function check_drain(self)
  if self.draining then
    self.interrupted = true
    fatal(self, INTERRUPTED)
  end
end

local function journal(self, entry)
  local res, err = workflows.step(entry)
  if not res then fatal(self, err) end
  if res.lost then fatal(self, res.lost) end
  self.status = res.status
  if res.draining then self.draining = true end
end

-- The next step id of the calling branch.
local function next_id(self, kind)
  local scope = self.scopes[coroutine.running()]
  if not scope then
    error(("wf:%s: call wf methods from the workflow function or a wf:parallel/wf:map branch, "
           .. "not from a task or coroutine of your own"):format(kind), 3)
  end
  scope.n = scope.n + 1
  return scope.prefix .. scope.n
end

-- The journaled entry of step id, checked against what the code asks now.
local function journaled(self, id, kind, name, args)
  local en = self.journal[id]
  if not en then return nil end
  if en.kind ~= kind or en.name ~= name then
    fatal(self, ("nondeterministic replay: step %s was %s but is now %s"):format(id, describe(en.kind, en.name),
                                                                            describe(kind, name)))
  end
  if en.args ~= args then
    fatal(self, ("nondeterministic replay: step %s %s was given other arguments than when it ran"):format(
      id, describe(kind, name)))
  end
  return en
end

local function restore_memory(self, text)
  local m = decode(text)
  if type(m) ~= "table" then return end
  for k in pairs(self.memory) do self.memory[k] = nil end
  for k, v in pairs(m) do self.memory[k] = v end
end

local function replay(self, id, en, kind, name, label)
  self.replayed = self.replayed + 1
  restore_memory(self, en.memory)
  if self.on_event then -- a step's start, end or replay is only shown, never recorded (see RECORDED)
    emit(self, { kind = "step_replayed", step = id, step_kind = kind, name = name, ok = en.status == "ok", label = label })
  end
  if en.status == "error" then error(en.error, 0) end
  return decode(en.result)
end

local function retryable(on, err)
  if on == nil then return true end
  if type(on) == "function" then return on(err) and true or false end
  for _, text in ipairs(on) do
    if err:find(text, 1, true) then return true end
  end
  return false
end

-- Runs exec(id, attempt) under opts' retry and timeout: ok, result, attempts.
local NO_RETRY = {}

local function attempt(self, id, kind, name, opts, exec)
  local r = opts.retry or self.def.retry or NO_RETRY
  local attempts, delay = r.attempts or 1, r.backoff_ms or r.backoff or 200
  local label = opts.timeout and ("step %s %s"):format(id, describe(kind, name)) -- what a timeout error names
  for n = 1, attempts do
    local ok, result
    if opts.timeout then ok, result = toolmod.bounded(opts.timeout, label, exec, id, n)
    else ok, result = pcall(exec, id, n) end
    if ok then return true, result, n end
    result = tostring(result)
    if self.fatal or n == attempts or not retryable(r.on, result) then return false, result, n end
    local wait = math.min(delay, r.max_backoff_ms or math.huge)
    emit(self, { kind = "retry", step = id, step_kind = kind, name = name, attempt = n + 1, of = attempts,
                 delay_ms = wait, error = result, label = opts.label })
    sleep(wait)
    delay = delay * (r.factor or 2)
  end
end

-- Remembers opts.compensate of a step that succeeded (run or replayed).
local function register(self, id, kind, name, opts, output)
  if opts.compensate and not self.compensating then
    self.compensations[#self.compensations + 1] = { id = id, what = describe(kind, name), fn = opts.compensate,
                                                    output = output }
  end
  return output
end

-- A durable step: replayed when journaled, else run, journaled, returned.
-- meta (optional) is filled by exec with the version of what it ran
-- ({version=, path=, source=}: an agent's file), journaled with the step.
local function step(self, kind, name, args, opts, exec, meta)
  check_live(self)
  local id = next_id(self, kind)
  local en = journaled(self, id, kind, name, args)
  if en then return register(self, id, kind, name, opts, replay(self, id, en, kind, name, opts.label)) end
  check_drain(self)
  if self.on_event then emit(self, { kind = "step_start", step = id, step_kind = kind, name = name, label = opts.label }) end
  local started, started_at = self.on_event and time.monotonic(), time.now()
  local ok, result, attempts = attempt(self, id, kind, name, opts, exec)
  check_live(self)
  local text
  if ok then
    local good, e = pcall(encode, result)
    if not good then
      ok, result = false, ("%s returned a value that cannot be journaled: %s"):format(describe(kind, name), e)
    else
      text = e
    end
  end
  local version = meta and meta.version
  journal(self, { step = id, kind = kind, name = name, args = args, status = ok and "ok" or "error",
                  result = text, error = not ok and result or nil, memory = memory_text(self),
                  attempts = attempts, started_at = started_at, version = version, path = version and meta.path,
                  source = version and meta.source })
  if version then self.stored[version] = true end
  self.executed = self.executed + 1
  if self.on_event then
    emit(self, { kind = "step_done", step = id, step_kind = kind, name = name, ok = ok, error = not ok and result or nil,
                 ms = time.monotonic() - started, label = opts.label })
  end
  if not ok then error(result, 0) end
  return register(self, id, kind, name, opts, as_journaled(result, text)) -- what a replay will see
end

local NO_OPTS = {} -- read only, as every opts table is here

local function opts_of(opts, what)
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then error(what .. ": opts must be a table {retry=, timeout=, compensate=, label=}", 3) end
  local ok, e = pcall(function() check_retry(opts.retry, what) check_timeout(opts.timeout, what) end)
  if not ok then error(type(e) == "table" and e.message or e, 3) end
  if opts.compensate ~= nil and type(opts.compensate) ~= "function" then
    error(what .. ": compensate must be a function(output, err)", 3)
  end
  if opts.label ~= nil and type(opts.label) ~= "string" then error(what .. ": label must be a string", 3) end
  return opts
end

-- The agent agents/NAME.lua for a wf:call, and (in meta) the version it was
-- loaded from: the one a resumed run journaled for NAME (self.pins: loaded
-- from its stored text), else the sandbox's (pinned when the run started
-- under the reload registry, else read from the project on first use).
local function load_agent(self, name, meta)
  local pin = self.pins[name]
  if pin then
    if not pin.agent then
      local env = setmetatable({}, { __index = _ENV })
      local chunk, err = load(pin.source, "@" .. (pin.path or ("agents/" .. name .. ".lua")), "t", env)
      local a = chunk and chunk()
      if not agentmod.is_agent(a) then
        error(("wf:call: the version of agents/%s.lua this run used (%s) does not load: %s"):format(
          name, pin.hash:sub(1, 12), tostring(err or "it does not return an agent{}")), 0)
      end
      pin.agent = a
    end
    meta.version, meta.path = pin.hash, pin.path
    return pin.agent
  end
  local a = agentmod.load(name)
  local hash, path, source = versions.of("agents." .. name)
  meta.version, meta.path = hash, path
  if hash and not self.stored[hash] then meta.source = source end -- stored with the first step that used it
  return a
end

function Run:call(a, input, opts)
  opts = opts_of(opts, "wf:call")
  local name
  if type(a) == "string" then
    if not a:match(NAME) then error(("wf:call: '%s' is not an agent name"):format(a), 2) end
    name = a
  elseif agentmod.is_agent(a) then
    name = a.name
  else
    error("wf:call: expected an agent{} or the name of one (agents/NAME.lua)", 2)
  end
  local meta = type(a) == "string" and {} or nil -- filled by load_agent
  return step(self, "call", name, digest(input), opts, function(id, n)
    local ag = meta and load_agent(self, a, meta) or a
    -- its model and tool calls are events of the run, tagged with step id
    -- and attempt n (moonhive trace)
    workflows.in_step(id, n)
    -- the agent runs as a part of this run (read only: new_ctx copies from it)
    self.agent_opts = self.agent_opts or
                      { ctx = { depth = 0, memory = self.memory, run_id = self.id, on_event = self.agent_events } }
    local ok, output = pcall(ag.run, ag, input, self.agent_opts)
    workflows.in_step()
    if not ok then error(output, 0) end
    return output
  end, meta)
end

function Run:tool(name, args, opts)
  opts = opts_of(opts, "wf:tool")
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then error("wf:tool: expected a built-in tool's name", 2) end
  return step(self, "tool", name, digest(args), opts, function()
    local ok, t = pcall(require, "tools." .. name)
    if not ok or not toolmod.is_tool(t) then error(("wf:tool: no built-in tool '%s'"):format(name), 0) end
    local ctx = setmetatable({ agent = { name = self.name, memory = {}, tools = {}, tools_by_name = {} },
                               run_id = self.id, memory = self.memory, depth = 0 }, agentmod.Ctx)
    local good, result = toolmod.invoke(t, args or {}, ctx)
    if not good then error(result, 0) end
    return result
  end)
end

function Run:now()
  return step(self, "now", nil, nil, {}, function() return time.now() end)
end

function Run:random(m, n)
  return step(self, "random", nil, digest({ m, n }), {}, function()
    if m == nil then return math.random() end
    return math.random(m, n)
  end)
end

-- Branches as tasks, each with its own step scope "ID.i."; waits for all.
local function branches(self, id, fns, limit)
  local sem = limit and task.semaphore(limit)
  local tasks = {}
  for i, fn in ipairs(fns) do
    tasks[i] = task.spawn(function()
      if sem then sem:acquire() end
      self.scopes[coroutine.running()] = { prefix = id .. "." .. i .. ".", n = 0 }
      local r = fn()
      if sem then sem:release() end
      return r
    end)
  end
  local results, failed = {}, nil
  for i, t in ipairs(tasks) do
    local ok, r = t:wait()
    if ok then
      results[i] = r
    elseif not failed then
      failed = self.fatal or ("branch %d failed: %s"):format(i, tostring(r))
      for j = i + 1, #tasks do tasks[j]:cancel() end
    end
  end
  if failed then error(failed, 0) end
  return results
end

-- A step made of branches: journaled as a whole once every branch is done.
local function composite(self, kind, fns, limit)
  check_live(self)
  local id = next_id(self, kind)
  local en = journaled(self, id, kind, nil, tostring(#fns))
  if en then
    -- The branches run again, each of their steps replayed from the journal,
    -- so what they register (compensations) is registered again.
    local ok, err = pcall(branches, self, id, fns, limit)
    if not ok then error(self.fatal or err, 0) end
    return replay(self, id, en, kind, nil)
  end
  local started_at = time.now()
  local ok, results = pcall(branches, self, id, fns, limit)
  check_live(self)
  if not ok then error(results, 0) end
  local text = encode(results)
  journal(self, { step = id, kind = kind, args = tostring(#fns), status = "ok", result = text,
                  memory = memory_text(self), started_at = started_at })
  self.executed = self.executed + 1
  return decode(text)
end

function Run:parallel(fns)
  if type(fns) ~= "table" then error("wf:parallel: expected a list of functions", 2) end
  for i, f in ipairs(fns) do
    if type(f) ~= "function" then error(("wf:parallel: item %d is not a function"):format(i), 2) end
  end
  return composite(self, "parallel", fns)
end

function Run:map(list, fn, opts)
  if type(list) ~= "table" then error("wf:map: expected a list", 2) end
  if type(fn) ~= "function" then error("wf:map: expected a function(item, i)", 2) end
  local limit = opts and opts.concurrency
  if limit ~= nil and (math.type(limit) ~= "integer" or limit < 1) then
    error("wf:map: concurrency must be a whole number >= 1", 2)
  end
  local fns = {}
  for i, item in ipairs(list) do fns[i] = function() return fn(item, i) end end
  return composite(self, "map", fns, limit)
end

function Run:sleep(ms)
  if type(ms) ~= "number" or ms < 0 then error("wf:sleep: expected milliseconds >= 0", 2) end
  check_live(self)
  local id = next_id(self, "sleep")
  local en = journaled(self, id, "sleep", nil, tostring(ms))
  if en and en.status ~= "started" then
    replay(self, id, en, "sleep")
    return
  end
  local wake = en and decode(en.result).wake_at or time.now() + ms / 1000
  local text = encode({ wake_at = wake })
  if not en then journal(self, { step = id, kind = "sleep", args = tostring(ms), status = "started", result = text }) end
  emit(self, { kind = "sleeping", step = id, ms = math.max(0, (wake - time.now()) * 1000) })
  local left = wake - time.now()
  check_drain(self)
  self.idle = (self.idle or 0) + 1 -- a drain may stop the run here: the sleep is journaled
  if left > 0 then sleep(left * 1000) end
  self.idle = self.idle - 1
  journal(self, { step = id, kind = "sleep", args = tostring(ms), status = "ok", result = text,
                  memory = memory_text(self) })
  self.executed = self.executed + 1
end

function Run:wait_signal(name, opts)
  if type(name) ~= "string" or name == "" then error("wf:wait_signal: expected a signal name", 2) end
  opts = opts or {}
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("wf:wait_signal: timeout must be milliseconds > 0", 2)
  end
  check_live(self)
  local id = next_id(self, "wait_signal")
  local en = journaled(self, id, "signal", name, nil)
  if en and en.status == "error" then
    replay(self, id, { status = "ok", memory = en.memory }, "signal", name)
    return nil, en.error
  end
  if en and en.status ~= "started" then return replay(self, id, en, "signal", name) end
  local deadline = en and decode(en.result).deadline or opts.timeout and time.now() + opts.timeout / 1000 or nil
  if not en then
    journal(self, { step = id, kind = "signal", name = name, status = "started", result = encode({ deadline = deadline }) })
  end
  workflows.status{ status = "waiting" }
  emit(self, { kind = "waiting", step = id, name = name })
  while true do
    local res, err = workflows.take_signal{ name = name, step = id, memory = memory_text(self) }
    if not res then fatal(self, err) end
    self.status = res.status
    check_live(self)
    if res.draining and not res.found then
      self.draining = true
      check_drain(self)
    end
    if res.found then
      workflows.status{ status = "running" }
      self.executed = self.executed + 1
      emit(self, { kind = "signal", step = id, name = name })
      return decode(res.payload)
    end
    if deadline and time.now() >= deadline then
      journal(self, { step = id, kind = "signal", name = name, status = "error", error = "timeout",
                      memory = memory_text(self) })
      workflows.status{ status = "running" }
      emit(self, { kind = "signal_timeout", step = id, name = name })
      return nil, "timeout"
    end
    sleep(POLL_MS)
  end
end

-- ---- running ----

-- pins: {NAME = {hash=, path=, source=}} the agent versions a resumed run used.
local function new_run(def, id, input, journal_entries, started_at, on_event, agent_events, version, pins)
  return setmetatable({
    id = id, name = def.name, input = input, memory = {}, def = def, journal = journal_entries or {},
    scopes = setmetatable({}, { __mode = "k" }), started_at = started_at or time.now(), status = "running",
    replayed = 0, executed = 0, on_event = on_event, agent_events = agent_events, compensations = {},
    version = version, pins = pins or {}, stored = {},
  }, Run)
end

-- Whether step id a comes before b: "3" < "3.1.2" < "10".
local function id_before(a, b)
  local ia, ib = a:gmatch("[^.]+"), b:gmatch("[^.]+")
  while true do
    local x, y = ia(), ib()
    if x == nil or y == nil then return x == nil and y ~= nil end
    if x ~= y then
      local nx, ny = tonumber(x), tonumber(y)
      if nx and ny then return nx < ny end
      return x < y
    end
  end
end

-- After the workflow function raised err: the registered compensations,
-- the latest step first, then def.on_error, each step journaled in its own
-- scope ("c.N", "e.N"). Returns the error the run fails with.
local function recover(run, err)
  local notes, scope, list = {}, run.scopes[coroutine.running()], run.compensations
  table.sort(list, function(a, b) return id_before(b.id, a.id) end)
  run.compensating = true
  scope.prefix, scope.n = "c.", 0
  for _, c in ipairs(list) do
    emit(run, { kind = "compensating", step = c.id, name = c.what })
    local ok, e = pcall(c.fn, c.output, err)
    if not ok then
      if run.fatal then error(run.fatal, 0) end
      notes[#notes + 1] = ("compensation of step %s failed: %s"):format(c.id, tostring(e))
    end
  end
  if run.def.on_error then
    scope.prefix, scope.n = "e.", 0
    emit(run, { kind = "on_error" })
    local ok, e = pcall(run.def.on_error, run, err)
    if not ok then
      if run.fatal then error(run.fatal, 0) end
      notes[#notes + 1] = "on_error failed: " .. tostring(e)
    end
  end
  if #notes == 0 then return err end
  return err .. "; " .. table.concat(notes, "; ")
end

-- Runs the workflow function to its end: a report {run_id=, workflow=,
-- status=, output= | error=, steps = {executed=, replayed=}}.
local function execute(run)
  local def = run.def
  local body = task.spawn(function()
    run.scopes[coroutine.running()] = { prefix = "", n = 0 }
    local ok, out = pcall(def.fn, run, run.input)
    if ok then return out end
    if run.fatal or (#run.compensations == 0 and not def.on_error) then error(run.fatal or out, 0) end
    error(recover(run, tostring(out)), 0)
  end)
  -- returns once the run is cancelled or taken over by another process
  -- (the runtime looks at every run of the process at once, every 250 ms)
  local watcher = task.spawn(function()
    local res = workflows.watch{}
    if res and res.draining and not res.lost and res.status ~= "cancelled" then
      run.draining = true -- the body stops at its next step, or now when it sleeps
      if (run.idle or 0) > 0 then
        run.interrupted, run.fatal = true, run.fatal or INTERRUPTED
        body:cancel()
      end
    elseif res and res.lost then
      run.fatal = run.fatal or res.lost
      body:cancel()
    elseif res and res.status == "cancelled" then
      run.fatal, run.status = run.fatal or "workflow run cancelled", "cancelled"
      body:cancel()
    end
  end)
  local timer = def.timeout and task.spawn(function()
    local left = def.timeout - (time.now() - run.started_at) * 1000
    if left > 0 then sleep(left) end
    run.fatal = run.fatal or ("workflow '%s' timed out after %d ms"):format(def.name, def.timeout)
    body:cancel()
  end)
  local ok, output = body:wait()
  watcher:cancel()
  if timer then timer:cancel() end
  local report = { run_id = run.id, workflow = def.name, version = run.version,
                   steps = { executed = run.executed, replayed = run.replayed } }
  if ok then
    local good, text = pcall(encode, output)
    if not good then ok, output = false, "the workflow's output cannot be journaled: " .. text end
    if ok then
      local res, err = workflows.status{ status = "succeeded", output = text }
      if not res then ok, output = false, err
      elseif res.status == "cancelled" then ok, run.fatal = false, "workflow run cancelled" end
    end
    if ok then
      report.status, report.output = "succeeded", as_journaled(output, text)
      emit(run, { kind = "finished", status = "succeeded" })
      return report
    end
  end
  local msg = run.fatal or tostring(output)
  if run.interrupted then
    report.status = "interrupted" -- left unfinished: resumed at the next start
  elseif run.status == "cancelled" or msg == "workflow run cancelled" then
    report.status = "cancelled"
  else
    report.status = "failed"
    workflows.status{ status = "failed", error = msg }
  end
  report.error = msg
  emit(run, { kind = "finished", status = report.status, error = msg })
  return report
end

-- ---- `moonhive run FILE` and `moonhive runs resume` ----

local function short(v, n)
  local text = type(v) == "string" and v or (pcall(json.encode, v) and json.encode(v)) or tostring(v)
  text = text:gsub("%s+", " ")
  if #text > n then text = text:sub(1, n - 3) .. "..." end
  return text
end

-- An on_event that shows a run's steps on stderr.
function M.progress()
  return function(ev)
    local what = ev.step and ("%s %s%s"):format(ev.step, ev.label and (ev.label .. ": ") or "",
                                                ev.name and ("%s %s"):format(ev.step_kind, ev.name) or ev.step_kind)
    local line
    if ev.kind == "step_start" then line = "▶ " .. what
    elseif ev.kind == "step_done" then
      line = ev.ok and ("✓ %s (%d ms)"):format(what, math.floor(ev.ms + 0.5)) or ("✗ %s: %s"):format(what, short(ev.error, 200))
    elseif ev.kind == "step_replayed" then line = "↺ " .. what .. " (journaled)"
    elseif ev.kind == "retry" then
      line = ("↻ %s: attempt %d of %d in %d ms after: %s"):format(what, ev.attempt, ev.of, ev.delay_ms, short(ev.error, 160))
    elseif ev.kind == "waiting" then line = ("⏸ %s waiting for signal '%s'"):format(ev.step, ev.name)
    elseif ev.kind == "signal" then line = ("✓ %s signal '%s' received"):format(ev.step, ev.name)
    elseif ev.kind == "signal_timeout" then line = ("✗ %s signal '%s' timed out"):format(ev.step, ev.name)
    elseif ev.kind == "sleeping" then line = ("⏸ %s sleeping %d ms"):format(ev.step, math.floor(ev.ms + 0.5))
    elseif ev.kind == "skipped" then line = ("⤼ %s skipped (its 'when' is false)"):format(ev.step)
    elseif ev.kind == "loop" then
      line = ("⟲ %s goes back to %s (%d of at most %d)"):format(ev.step, ev.back_to, ev.iteration, ev.of)
    elseif ev.kind == "compensating" then line = ("↩ compensating step %s %s"):format(ev.step, ev.name)
    elseif ev.kind == "on_error" then line = "↩ on_error"
    elseif ev.kind == "started" then line = ("run %s started"):format(ev.run_id)
    elseif ev.kind == "resumed" then line = ("run %s resumed (%d steps journaled)"):format(ev.run_id, ev.journaled)
    elseif ev.kind == "finished" then line = ev.status .. (ev.error and (": " .. short(ev.error, 300)) or "")
    end
    if line then log.write(("[%s] %s\n"):format(ev.workflow, line)) end
  end
end

local function parse_input(args)
  local words, input, i, queue = {}, nil, 1, false
  while i <= #args do
    if args[i] == "--enqueue" then
      queue, i = true, i + 1
    elseif args[i] == "--input" then
      if args[i + 1] == nil then error("--input needs a JSON value: --input '{\"task\": \"...\"}'", 0) end
      local v, err = json.decode(args[i + 1])
      if err then error("--input is not JSON: " .. err, 0) end
      input = v
      i = i + 2
    else
      words[#words + 1] = args[i]
      i = i + 1
    end
  end
  if input == nil and #words > 0 then input = table.concat(words, " ") end
  return input, queue
end

local function print_report(report, json_out)
  if json_out then print(json.encode(report))
  elseif report.status == "succeeded" then print(agentmod.input_text(report.output)) end
end

-- Runs workflow `def` as a new durable run of `input` to its end and
-- returns the report, as `moonhive run` does without printing. opts.source:
-- the workflow file's text (stored as the run's version, what `runs resume`
-- runs again); opts.path, opts.on_event(ev), opts.agent_events(ev).
function M.start(def, input, opts)
  if not M.is_workflow(def) then error("workflow.start: expected a workflow{}", 2) end
  opts = opts or {}
  if type(opts.source) ~= "string" then error("workflow.start: opts.source must be the workflow file's text", 2) end
  local encoded = encode(input)
  local res, err = workflows.begin{ workflow = def.name, path = opts.path, source = opts.source, input = encoded }
  if not res then error(err, 0) end
  local run = new_run(def, res.id, as_journaled(input, encoded), {}, res.started_at, opts.on_event, opts.agent_events, res.version)
  emit(run, { kind = "started", run_id = run.id })
  return execute(run)
end

-- Starts workflow `def` (what FILE returned; source is FILE's text) with
-- input from the command line: --input JSON, or the words joined; with
-- --enqueue, only queues it (status pending) and prints its id.
function M.main(def, json_out, path, source, ...)
  local input, queue = parse_input({ ... })
  if queue then
    local res, err = workflows.begin{ workflow = def.name, path = path, source = source, input = encode(input), queue = true }
    if not res then error(err, 0) end
    print(json_out and json.encode({ run_id = res.id, workflow = def.name, status = res.status }) or res.id)
    return
  end
  local report = M.start(def, input, { path = path, source = source, on_event = not json_out and M.progress() or nil,
                                       agent_events = not json_out and agentmod.progress() or nil })
  print_report(report, json_out)
  if report.status ~= "succeeded" then
    error(("workflow run %s %s: %s"):format(report.run_id, report.status, report.error), 0)
  end
end

-- The workflow a run started with, from its stored source (Lua or JSON).
local function load_version(r)
  if r.path and r.path:match("%.json$") then
    local ok, def = pcall(M.from_json, r.source, r.path)
    if not ok then error(("run %s: its workflow source does not load: %s"):format(r.id, def), 0) end
    return def
  end
  local chunk, lerr = load(r.source, "@" .. (r.path or r.workflow), "t")
  if not chunk then error(("run %s: its workflow source does not load: %s"):format(r.id, lerr), 0) end
  local def = chunk()
  if not M.is_workflow(def) then error(("run %s: %s does not return a workflow{}"):format(r.id, r.path), 0) end
  return def
end

local function resume_one(r, json_out, token)
  local def = load_version(r)
  local a, err = workflows.attach{ id = r.id, token = token }
  if not a then error(err, 0) end
  local n = 0
  for _ in pairs(a.journal) do n = n + 1 end
  local run = new_run(def, a.id, decode(a.input), a.journal, a.started_at, not json_out and M.progress() or nil,
                      not json_out and agentmod.progress() or nil, r.version, a.agents)
  emit(run, { kind = "resumed", run_id = run.id, journaled = n })
  return execute(run)
end

-- Resumes run `id` quietly and returns its report (the service's automatic
-- resume; the run's events are in the store). token: as for resume_main.
function M.resume(id, token)
  local res, err = workflows.unfinished{ id = id, token = token }
  if not res then error(err, 0) end
  if #res.runs == 0 then error(("run %s: %s"):format(id, res.busy and res.busy[1] or "nothing to resume"), 0) end
  return resume_one(res.runs[1], true, token)
end

-- Resumes run `id` (a unique prefix), or every unfinished run, each on the
-- version of the workflow it started with, all at once. token: what lets
-- it take runs over (host/cli_workflow.c has the runtime grant it); keep
-- it in locals, out of reach of the workflow code run here.
function M.resume_main(json_out, id, token)
  local res, err = workflows.unfinished{ id = id, token = token }
  if not res then error(err, 0) end
  for _, why in ipairs(res.busy or {}) do log.write(why .. ": left alone\n") end
  if #res.runs == 0 then
    if json_out then print("[]") else log.write("no unfinished workflow runs\n") end
    return
  end
  local tasks, reports = {}, {}
  for i, r in ipairs(res.runs) do tasks[i] = task.spawn(resume_one, r, json_out, token) end
  local failed = 0
  for i, t in ipairs(tasks) do
    local ok, report = t:wait()
    if not ok then report = { run_id = res.runs[i].id, workflow = res.runs[i].workflow, status = "failed", error = report } end
    reports[i] = report
    if report.status ~= "succeeded" then failed = failed + 1 end
  end
  if id then
    print_report(reports[1], json_out)
    if failed > 0 then error(("workflow run %s %s: %s"):format(reports[1].run_id, reports[1].status, reports[1].error), 0) end
    return
  end
  if json_out then print(json.encode(reports))
  else
    for _, r in ipairs(reports) do
      print(("%s\t%s\t%s"):format(r.run_id, r.status, r.status == "succeeded" and short(r.output, 200) or r.error))
    end
  end
  if failed > 0 then error(("%d of %d resumed runs did not succeed"):format(failed, #reports), 0) end
end

return setmetatable(M, { __call = function(_, def) return M.new(def) end })
