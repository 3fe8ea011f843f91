-- workflow_graph — declarative step graphs for workflow{} (Lua tables or
-- JSON files): checks a graph when it is defined and compiles it into a
-- workflow function that runs the steps through wf:call, wf:tool and
-- wf:parallel, so a graph run is journaled, replayed, retried, timed out
-- and cancelled exactly like code. stdlib/workflow.lua calls compile().
--
--   workflow{ name = "review", steps = {
--     draft  = { agent = "writer", input = "{{input.task}}" },
--     review = { agent = "reviewer", after = {"draft"}, input = "{{steps.draft.output}}",
--                loop = { back_to = "draft", max = 3, when = 'not steps.review.output contains "APPROVED"' } },
--     publish = { tool = "files", after = {"review"}, when = 'steps.review.output contains "APPROVED"',
--                 input = { action = "write", path = "out.md", content = "{{steps.draft.output}}" },
--                 retry = { attempts = 3, backoff = 500 }, timeout = 60000, compensate = "unpublish" },
--     unpublish = { tool = "files", input = { action = "delete", path = "out.md" } },
--   }, output = "draft", on_error = "notify" }
--
-- Execution in rounds: each round takes every step whose `after` steps have
-- all finished, evaluates the `when` of each against the state at the start
-- of the round (false: the step is skipped, which counts as finished), and
-- runs the others at once (one step: a plain wf:call/wf:tool; several: a
-- wf:parallel with one branch per step, in the order of their ids). Inputs
-- are rendered at the start of the round too. So what a step sees depends
-- only on journaled results, and a replay takes the same path. After a
-- round, a step with `loop` whose condition holds (and that went back fewer
-- than `max` times) sets loop.back_to and every step after it back to
-- pending; they keep their last output until they run again. Loops nested
-- inside it start counting afresh.
--
-- Handler steps — the ones named by a step's on_error or compensate or by
-- the workflow's on_error — run only when called for: on_error when the
-- step fails (its output then stands in for the failed step's, whose
-- status is "failed"); compensate when the run fails later (through the
-- engine's compensations, latest first); the workflow's on_error after
-- the compensations. Expressions see `error` and `target` ({id=, input=,
-- output=, error=} of the step handled) there.
--
-- Names in expressions and templates: input, steps.ID.{output, status
-- ("pending", "done", "failed", "skipped"), error, runs}, memory (wf.memory),
-- error, target.

local expr = require "expr"
local agentmod = require "agent"
local toolmod = require "tool"

local M = {}

local ID = "^[%a_][%w_]*$"
local AGENT_NAME = "^[%a_][%w_%-]*$"
local FIELDS = { "agent", "tool", "input", "after", "when", "retry", "timeout", "loop", "on_error", "compensate",
                 "description" }
local HANDLER_FIELDS = { agent = true, tool = true, input = true, retry = true, timeout = true, description = true }
local LOOP_FIELDS = { back_to = true, max = true, when = true }
local TOP_FIELDS = { name = true, description = true, timeout = true, retry = true, steps = true, output = true,
                     on_error = true }
local ROOTS = { input = true, steps = true, memory = true, error = true, target = true }
local MAX_INPUT_DEPTH = 32

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local STEP_FIELDS = set_of(FIELDS)

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- ---- checking a definition ----

-- A checker bound to one workflow: fail(where, msg) raises "workflow:
-- NAME: where: msg" through the engine's own fail.
local function checker(name, fail)
  return function(where, msg) fail(("%s: %s%s"):format(name, where and (where .. ": ") or "", msg)) end
end

-- Checks the names an expression reads: roots, and steps.ID against the graph.
local function check_paths(paths, steps, bad)
  for _, p in ipairs(paths) do
    if not ROOTS[p.root] then
      bad(("expression error at column %d: unknown name '%s' (names are input, steps, memory, error and target)")
        :format(p.col, p.root))
    end
    if p.root == "steps" and p.first and steps[p.first] == nil then
      bad(("expression error at column %d: unknown step '%s'"):format(p.col, p.first))
    end
  end
end

-- A condition: an expression string (or, from Lua, a function(ctx)) ->
-- function(env) -> value.
local function condition(v, steps, bad)
  if type(v) == "function" then return v end
  if type(v) ~= "string" then bad("must be an expression (a string)") end
  local c, err = expr.compile(v)
  if not c then bad(err) end
  check_paths(c.paths, steps, bad)
  return function(env) return c:eval(env) end
end

-- A step input: strings may hold {{ }} placeholders, tables are rendered
-- value by value, a function(ctx) (from Lua) is called; anything else is
-- used as it is. -> function(env) -> value.
local function template(v, steps, bad, depth)
  if type(v) == "function" then return v end
  if type(v) == "string" then
    if not expr.has_placeholder(v) then return function() return v end end
    local t, err = expr.template(v)
    if not t then bad(err) end
    check_paths(t.paths, steps, bad)
    return function(env) return t:render(env) end
  end
  if type(v) == "table" then
    if depth > MAX_INPUT_DEPTH then bad("is nested too deeply") end
    local parts = {}
    for k, item in pairs(v) do
      if type(k) ~= "string" and math.type(k) ~= "integer" then bad("has a key that is not a string") end
      parts[k] = template(item, steps, bad, depth + 1)
    end
    return function(env)
      local out = {}
      for k, render in pairs(parts) do out[k] = render(env) end
      return out
    end
  end
  return function() return v end
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function list_of(v, bad)
  if type(v) == "string" then return { v } end
  local out, good = {}, type(v) == "table"
  for i, item in ipairs(good and v or {}) do
    good = good and type(item) == "string"
    out[i] = item
  end
  if not good or #out ~= count(v) then bad("must be a step id or a list of step ids") end
  return out
end

-- Every step `from` reaches through `edges` (id -> list of ids), from excluded.
local function reach(from, edges)
  local seen, stack = {}, { from }
  while #stack > 0 do
    local id = table.remove(stack)
    for _, nxt in ipairs(edges[id] or {}) do
      if not seen[nxt] then
        seen[nxt] = true
        stack[#stack + 1] = nxt
      end
    end
  end
  return seen
end

-- A cycle of `after` as "a -> b -> a", or nil.
local function find_cycle(order, after)
  local color, path = {}, {}
  local function visit(id)
    color[id] = 1
    path[#path + 1] = id
    for _, dep in ipairs(after[id]) do
      if color[dep] == 1 then
        local from = 1
        while path[from] ~= dep do from = from + 1 end
        local cyc = { table.unpack(path, from) }
        cyc[#cyc + 1] = dep
        return table.concat(cyc, " -> ")
      end
      if not color[dep] then
        local c = visit(dep)
        if c then return c end
      end
    end
    color[id] = 2
    path[#path] = nil
  end
  for _, id in ipairs(order) do
    if not color[id] then
      local c = visit(id)
      if c then return c end
    end
  end
end

local function is_subset(a, b)
  for k in pairs(a) do
    if not b[k] then return false end
  end
  return true
end

-- The handler steps: named by on_error or compensate, or by the workflow.
local function handlers_of(def, bad_at)
  local h = {}
  if type(def.on_error) == "string" then h[def.on_error] = "the workflow's on_error" end
  for _, id in ipairs(sorted_keys(def.steps)) do
    local s = def.steps[id]
    if type(s) == "table" then
      for _, f in ipairs({ "on_error", "compensate" }) do
        local target = s[f]
        if target ~= nil then
          if type(target) ~= "string" then bad_at(id, f .. " must be the id of a step") end
          if def.steps[target] == nil then bad_at(id, ("%s names an unknown step '%s'"):format(f, target)) end
          if target == id then bad_at(id, f .. " cannot name the step itself") end
          h[target] = h[target] or ("the %s of step '%s'"):format(f, id)
        end
      end
    end
  end
  return h
end

local function check_step(g, id, s, bad_at, check)
  local bad = function(msg) bad_at(id, msg) end
  if type(s) ~= "table" then bad("must be a table {agent= or tool=, input=, after=, ...}") end
  local handler = g.handlers[id]
  for k in pairs(s) do
    if not STEP_FIELDS[k] then
      bad(("unknown field '%s' (fields: %s)"):format(tostring(k), table.concat(FIELDS, ", ")))
    end
    if handler and not HANDLER_FIELDS[k] then
      bad(("is %s, so it runs only when called for and cannot have '%s'"):format(handler, k))
    end
  end
  local step = { id = id }
  if s.agent ~= nil and s.tool ~= nil then bad("has both agent= and tool=; give one") end
  if s.agent ~= nil then
    if type(s.agent) == "string" then
      if not s.agent:match(AGENT_NAME) then
        bad(("agent '%s' is not an agent name (agents/NAME.lua)"):format(s.agent))
      end
    elseif not agentmod.is_agent(s.agent) then
      bad("agent must be an agent's name (agents/NAME.lua) or an agent{}")
    end
    step.agent = s.agent
  elseif s.tool ~= nil then
    if type(s.tool) ~= "string" or not s.tool:match(ID) then bad("tool must be a built-in tool's name") end
    local ok, t = pcall(require, "tools." .. s.tool)
    if not ok or not toolmod.is_tool(t) then bad(("no built-in tool '%s' (stdlib/tools/)"):format(s.tool)) end
    step.tool = s.tool
  else
    bad("needs agent= (an agent's name) or tool= (a built-in tool's name)")
  end
  local where = function(field) return function(msg) bad(field .. ": " .. msg) end end
  if s.input ~= nil then step.input = template(s.input, g.defs, where("input"), 1) end
  check.retry(s.retry, g.name .. ": step '" .. id .. "'")
  check.timeout(s.timeout, g.name .. ": step '" .. id .. "'")
  step.retry, step.timeout = s.retry, s.timeout
  if s.when ~= nil then step.when = condition(s.when, g.defs, where("when")) end
  step.after = s.after == nil and {} or list_of(s.after, where("after"))
  for _, dep in ipairs(step.after) do
    if g.defs[dep] == nil then bad(("'after' names an unknown step '%s'"):format(dep)) end
    if dep == id then bad("'after' names the step itself") end
    if g.handlers[dep] then
      bad(("'after' names '%s', which is %s and runs only when called for"):format(dep, g.handlers[dep]))
    end
  end
  step.on_error, step.compensate = s.on_error, s.compensate
  if s.loop ~= nil then
    local l = s.loop
    if type(l) ~= "table" then bad("loop must be {back_to=, max=, when=}") end
    for k in pairs(l) do
      if not LOOP_FIELDS[k] then bad(("loop: unknown field '%s' (fields: back_to, max, when)"):format(tostring(k))) end
    end
    if type(l.back_to) ~= "string" or g.defs[l.back_to] == nil then
      local what = l.back_to == nil and "nothing" or "'" .. tostring(l.back_to) .. "'"
      bad(("loop.back_to must name a step (%s is not one)"):format(what))
    end
    if math.type(l.max) ~= "integer" or l.max < 1 then bad("loop.max must be a whole number >= 1") end
    step.loop = { back_to = l.back_to, max = l.max }
    if l.when ~= nil then step.loop.when = condition(l.when, g.defs, where("loop.when")) end
  end
  return step
end

-- def -> { run = function(wf, input), on_error = function(wf, err) | nil }.
-- check = { fail = the engine's fail, retry = check_retry, timeout =
-- check_timeout, emit = emit(run, event) }.
function M.compile(def, check)
  local name = def.name
  local bad_top = checker(name, check.fail)
  local bad_at = function(id, msg) bad_top("step '" .. id .. "'", msg) end
  for k in pairs(def) do
    if not TOP_FIELDS[k] then
      bad_top(nil, ("unknown field '%s' in a graph workflow (fields: name, description, timeout, retry, steps, "
                    .. "output, on_error)"):format(tostring(k)))
    end
  end
  if type(def.steps) ~= "table" then bad_top(nil, "'steps' must be a table {id = {agent= or tool=, ...}, ...}") end
  if next(def.steps) == nil then bad_top(nil, "'steps' is empty") end
  for id in pairs(def.steps) do
    if type(id) ~= "string" then bad_top(nil, "'steps' must map step ids to steps, not be a list") end
    if not id:match(ID) or #id > 64 then
      bad_top(nil, ("step id '%s' must be letters, digits and '_' (at most 64), not starting with a digit"):format(id))
    end
  end
  local g = { name = name, defs = def.steps, steps = {}, order = {}, emit = check.emit }
  g.handlers = handlers_of(def, bad_at)
  if def.on_error ~= nil and type(def.on_error) ~= "string" and type(def.on_error) ~= "function" then
    bad_top(nil, "'on_error' must be the id of a step (or, from Lua, a function(wf, err))")
  end
  for _, id in ipairs(sorted_keys(def.steps)) do
    g.steps[id] = check_step(g, id, def.steps[id], bad_at, check)
    if not g.handlers[id] then g.order[#g.order + 1] = id end
  end
  if #g.order == 0 then bad_top(nil, "every step is an on_error or compensate step: nothing would run") end
  local after, before = {}, {}
  for _, id in ipairs(g.order) do
    after[id] = g.steps[id].after
    for _, dep in ipairs(after[id]) do
      before[dep] = before[dep] or {}
      table.insert(before[dep], id)
    end
  end
  local cycle = find_cycle(g.order, after)
  if cycle then
    bad_top(nil, ("the steps' 'after' make a cycle: %s (to repeat steps, use loop = {back_to=, max=})"):format(cycle))
  end
  -- loops: back_to must be the step or one it runs after; the body is back_to and every step after it
  for _, id in ipairs(g.order) do
    local l = g.steps[id].loop
    if l then
      if l.back_to ~= id and not reach(id, after)[l.back_to] then
        bad_at(id, ("loop.back_to '%s' is not an earlier step (it must be '%s' itself or a step '%s' runs after)")
          :format(l.back_to, id, id))
      end
      l.body = reach(l.back_to, before)
      l.body[l.back_to] = true
    end
  end
  for _, id in ipairs(g.order) do
    local l = g.steps[id].loop
    if l then
      l.inner = {}
      for _, other in ipairs(g.order) do
        local ol = g.steps[other].loop
        if other ~= id and ol and is_subset(ol.body, l.body) and count(ol.body) < count(l.body) then
          l.inner[#l.inner + 1] = other
        end
      end
    end
  end
  -- the output: a step's id, a template, or (from Lua) a function(ctx)
  local out = def.output
  if type(out) == "string" and g.handlers[out] then
    bad_top("output", ("'%s' is %s, which runs only when called for"):format(out, g.handlers[out]))
  elseif type(out) == "string" and g.steps[out] then
    g.output = function(env) return env.steps[out].output end
  elseif out ~= nil then
    g.output = template(out, g.defs, function(msg) bad_top("output", msg) end, 1)
  end
  return { run = function(wf, input) return M.run(g, wf, input) end, on_error = M.workflow_on_error(g, def.on_error) }
end

-- ---- running ----

local states = setmetatable({}, { __mode = "k" }) -- wf -> the graph's step states, for the workflow's on_error

local function env_of(wf, input, state, extra)
  local env = { input = input, steps = state, memory = wf.memory }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function evaluate(s, field, fn, env)
  local ok, v = pcall(fn, env)
  if not ok then error(("step '%s': %s: %s"):format(s.id, field, tostring(v)), 0) end
  return v
end

local function invoke(wf, s, input, opts)
  if s.agent then return wf:call(s.agent, input, opts) end
  return wf:tool(s.tool, input, opts)
end

-- A handler step (on_error, compensate, the workflow's on_error) in env.
local function run_handler(wf, h, env)
  local input = env.input
  if h.input then input = evaluate(h, "input", h.input, env) end
  return invoke(wf, h, input, { retry = h.retry, timeout = h.timeout, label = h.id })
end

-- Runs step s with its rendered input: {status = "done" | "failed" |
-- "error", output=, error=} ("failed": its on_error step stood in).
local function run_step(g, wf, s, input, env)
  local opts = { retry = s.retry, timeout = s.timeout, label = s.id }
  if s.compensate then
    local h = g.steps[s.compensate]
    opts.compensate = function(output, err)
      return run_handler(wf, h, env_of(wf, env.input, env.steps, {
        error = err, target = { id = s.id, input = input, output = output } }))
    end
  end
  local ok, out = pcall(invoke, wf, s, input, opts)
  if ok then return { status = "done", output = out } end
  if wf.fatal then error(wf.fatal, 0) end
  out = tostring(out)
  if not s.on_error then return { status = "error", error = out } end
  local good, handled = pcall(run_handler, wf, g.steps[s.on_error], env_of(wf, env.input, env.steps, {
    error = out, target = { id = s.id, input = input, error = out } }))
  if good then return { status = "failed", error = out, output = handled } end
  if wf.fatal then error(wf.fatal, 0) end
  local msg = ("%s (and its on_error step '%s' failed: %s)"):format(out, s.on_error, tostring(handled))
  return { status = "error", error = msg }
end

local function ready(g, state)
  local list = {}
  for _, id in ipairs(g.order) do
    if state[id].status == "pending" then
      local go = true
      for _, dep in ipairs(g.steps[id].after) do
        if state[dep].status == "pending" then go = false break end
      end
      if go then list[#list + 1] = id end
    end
  end
  return list
end

-- Runs one round's steps: one directly, several as a wf:parallel.
local function run_round(g, wf, ids, env)
  local inputs = {}
  for i, id in ipairs(ids) do
    local s = g.steps[id]
    inputs[i] = s.input and evaluate(s, "input", s.input, env) or env.input
  end
  if #ids == 1 then return { run_step(g, wf, g.steps[ids[1]], inputs[1], env) } end
  local fns = {}
  for i, id in ipairs(ids) do fns[i] = function() return run_step(g, wf, g.steps[id], inputs[i], env) end end
  return wf:parallel(fns)
end

-- After a round: the loops among ids whose condition holds go back.
local function go_back(g, wf, ids, state, loops, input)
  local env, back = env_of(wf, input, state), {}
  for _, id in ipairs(ids) do
    local l = g.steps[id].loop
    if l and state[id].status ~= "skipped" and (loops[id] or 0) < l.max
       and (not l.when or expr.truthy(evaluate(g.steps[id], "loop.when", l.when, env))) then
      back[#back + 1] = id
    end
  end
  for _, id in ipairs(back) do
    local l = g.steps[id].loop
    loops[id] = (loops[id] or 0) + 1
    for rid in pairs(l.body) do state[rid].status = "pending" end
    for _, inner in ipairs(l.inner) do loops[inner] = nil end
    g.emit(wf, { kind = "loop", step = id, back_to = l.back_to, iteration = loops[id], of = l.max })
  end
end

function M.run(g, wf, input)
  local state, loops, last = {}, {}, nil
  for _, id in ipairs(g.order) do state[id] = { status = "pending", runs = 0 } end
  states[wf] = state
  while true do
    local ids = ready(g, state)
    if #ids == 0 then break end
    local env, run = env_of(wf, input, state), {}
    for _, id in ipairs(ids) do
      local s = g.steps[id]
      if s.when and not expr.truthy(evaluate(s, "when", s.when, env)) then
        state[id].status, state[id].output, state[id].error = "skipped", nil, nil
        g.emit(wf, { kind = "skipped", step = id })
      else
        run[#run + 1] = id
      end
    end
    if #run > 0 then
      local results = run_round(g, wf, run, env)
      local failure
      for i, id in ipairs(run) do
        local r, st = results[i], state[id]
        st.runs = st.runs + 1
        st.status, st.output, st.error = r.status, r.output, r.error
        if r.status == "error" then failure = failure or ("step '%s' failed: %s"):format(id, r.error) end
      end
      if failure then error(failure, 0) end
      last = run
      go_back(g, wf, run, state, loops, input)
    end
  end
  if g.output then
    local ok, v = pcall(g.output, env_of(wf, input, state))
    if not ok then error("output: " .. tostring(v), 0) end
    return v
  end
  if not last then return nil end
  if #last == 1 then return state[last[1]].output end
  local out = {}
  for _, id in ipairs(last) do out[id] = state[id].output end
  return out
end

function M.workflow_on_error(g, on_error)
  if type(on_error) ~= "string" then return on_error end
  local h = g.steps[on_error]
  return function(wf, err)
    return run_handler(wf, h, env_of(wf, wf.input, states[wf] or {}, { error = err }))
  end
end

return M
