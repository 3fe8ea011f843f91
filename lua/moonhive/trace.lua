-- moonhive.trace — a recorded run as a tree, for `moonhive trace ID`: a
-- workflow run's journaled steps (nested by step id: 3.2.1 under 3), under
-- each step the model and tool calls its attempts made (grouped by attempt
-- when there were several) and the runs started inside it; under an agent
-- run its model calls, tool calls and the runs it started; each node with
-- its times, tokens and cost. Reads through moonhive.runs and
-- moonhive.workflows (no SQL here).
--
--   build(id, verbose) -> tree | nil, message
--   render(tree, verbose) -> text
--   json(tree) -> text
-- A node: {type = "run"|"step"|"attempt"|"model"|"tool"|"event",
-- started_at=, finished_at=, ms=, children = {...}, ...}; verbose adds the
-- recorded prompts of model calls, tool arguments and results, step results.

local cjson = require "cjson"
local runs = require "moonhive.runs"
local workflows = require "moonhive.workflows"

local _M = {}

local MAX_DEPTH = 16 -- runs inside runs: a loop in the records stops here

local function ms_between(a, b)
  if not (a and b) then return nil end
  return math.max(0, math.floor((b - a) * 1000 + 0.5))
end

-- "3.2.1" -> {3, 2, 1}, for ordering steps as the code ordered them.
local function step_key(id)
  local key = {}
  for n in tostring(id):gmatch("%d+") do key[#key + 1] = tonumber(n) end
  return key
end

local function step_before(a, b)
  local ka, kb = step_key(a.step), step_key(b.step)
  for i = 1, math.max(#ka, #kb) do
    if (ka[i] or -1) ~= (kb[i] or -1) then return (ka[i] or -1) < (kb[i] or -1) end
  end
  return false
end

-- The step that "3.2.1" is a branch step of ("3"), or nil at the top.
local function parent_step(id)
  return id:match("^(.+)%.%d+%.%d+$")
end

-- ---- an agent run's events ----

local function model_node(ev, verbose)
  local d = type(ev.data) == "table" and ev.data or {}
  local u = type(d.usage) == "table" and d.usage or {}
  local n = { type = "model", agent = ev.agent, model = d.model, ms = tonumber(d.ms), finished_at = ev.at,
              tokens_in = tonumber(u.input), tokens_out = tonumber(u.output), cost = tonumber(d.cost),
              finish_reason = d.finish_reason, tool_calls = math.tointeger(d.tool_calls), cached = d.cached or nil,
              error = ev.kind == "model_error" and tostring(d.error) or nil, seq = ev.seq }
  n.started_at = n.ms and ev.at - n.ms / 1000 or ev.at
  if verbose then n.system, n.messages, n.omitted = d.system, d.messages, d.omitted end
  return n
end

-- Nodes for an agent run's events: model calls, tool calls (a call and its
-- result joined by the call's id), anything else as it is.
local function event_nodes(events, verbose)
  local nodes, open = {}, {}
  for _, ev in ipairs(events or {}) do
    local d = type(ev.data) == "table" and ev.data or {}
    if ev.kind == "model_call" or ev.kind == "model_error" then
      nodes[#nodes + 1] = model_node(ev, verbose)
    elseif ev.kind == "tool_call" then
      local n = { type = "tool", agent = ev.agent, name = d.name, started_at = ev.at, seq = ev.seq,
                  arguments = verbose and d.arguments or nil }
      nodes[#nodes + 1] = n
      open[#open + 1] = { key = d.id or d.name, node = n }
    elseif ev.kind == "tool_result" then
      local found
      for i, o in ipairs(open) do
        if o.key == (d.id or d.name) then found = table.remove(open, i).node break end
      end
      if not found then -- a result without a call (a tool the agent does not have)
        found = { type = "tool", agent = ev.agent, name = d.name, started_at = ev.at, seq = ev.seq }
        nodes[#nodes + 1] = found
      end
      found.finished_at, found.ok = ev.at, d.ok and true or false
      found.ms = ms_between(found.started_at, ev.at)
      if verbose or not d.ok then found.result = d.result end
    else
      nodes[#nodes + 1] = { type = "event", kind = ev.kind, agent = ev.agent, started_at = ev.at, seq = ev.seq,
                            data = ev.data }
    end
  end
  return nodes
end

-- ---- runs and steps ----

local build_run

local function run_node(run)
  return { type = "run", id = run.id, kind = run.kind or "agent", name = run.agent, status = run.status,
           started_at = run.started_at, finished_at = run.finished_at,
           ms = ms_between(run.started_at, run.finished_at), tokens_in = run.tokens_in, tokens_out = run.tokens_out,
           cost = run.cost, error = run.error, parent_step = run.parent_step, children = {} }
end

local function step_node(en, verbose)
  local done = en.status ~= "started"
  local n = { type = "step", step = en.step, kind = en.kind, name = en.name, status = en.status,
              attempts = en.attempts, started_at = en.started_at, finished_at = done and en.at or nil,
              error = en.error, children = {} }
  n.ms = done and ms_between(n.started_at, n.finished_at) or nil
  if verbose and en.result ~= nil then
    local ok, v = pcall(cjson.decode, en.result)
    n.result = ok and v or en.result
  end
  return n
end

-- What a step's recorded events say: event nodes of one attempt ({} when
-- none), with the tokens and cost of its model calls and its times.
local function attempt_node(n, list, verbose)
  local a = { type = "attempt", attempt = n, children = event_nodes(list, verbose), tokens_in = 0, tokens_out = 0,
              cost = 0 }
  for _, c in ipairs(a.children) do
    if c.type == "model" then
      a.tokens_in, a.tokens_out, a.cost = a.tokens_in + (c.tokens_in or 0), a.tokens_out + (c.tokens_out or 0),
                                          a.cost + (c.cost or 0)
    end
    a.started_at = math.min(a.started_at or math.huge, c.started_at or math.huge)
    a.finished_at = math.max(a.finished_at or 0, c.finished_at or c.started_at or 0)
    c.seq = nil
  end
  a.ms = ms_between(a.started_at, a.finished_at)
  return a
end

-- Puts a step's recorded model and tool calls (events tagged with the
-- step, oldest first) under its node: directly when one attempt made them
-- all, else under a node per attempt. Attempts of an earlier process (its
-- events older than the step's journaled start) were interrupted; earlier
-- attempts of the one that journaled the step failed (why: the run's
-- "retry" event), its last one ended as the step did.
local function step_events(sn, events, retries, verbose)
  local groups, order = {}, {}
  for _, ev in ipairs(events) do
    local earlier = sn.started_at and sn.status ~= "unfinished" and ev.at < sn.started_at
    local key = (earlier and "i" or "a") .. tostring(ev.attempt or 1)
    if not groups[key] then
      groups[key] = { n = math.tointeger(ev.attempt) or 1, earlier = earlier, list = {} }
      order[#order + 1] = key
    end
    local g = groups[key].list
    g[#g + 1] = ev
  end
  local nodes = {}
  for _, key in ipairs(order) do
    local g = groups[key]
    local a = attempt_node(g.n, g.list, verbose)
    sn.tokens_in, sn.tokens_out, sn.cost = (sn.tokens_in or 0) + a.tokens_in, (sn.tokens_out or 0) + a.tokens_out,
                                          (sn.cost or 0) + a.cost
    if g.earlier then
      a.status, a.error = "interrupted", "interrupted: the process running the workflow stopped"
    else
      -- the times of an attempt of the process that journaled the step: from
      -- the step's start or the retry before it, to the retry after it or
      -- the step's end
      local before, after = retries[sn.step .. "#" .. g.n], retries[sn.step .. "#" .. (g.n + 1)]
      a.started_at = g.n == 1 and sn.started_at or before and before.at + before.delay_ms / 1000 or a.started_at
      if sn.status == "unfinished" or g.n >= (sn.attempts or 1) then
        a.status, a.finished_at = sn.status, sn.finished_at
      else
        a.status = "failed"
        a.error = after and after.error or ("attempt %d failed; the step tried again"):format(g.n)
        a.finished_at = after and after.at or a.finished_at
      end
      a.ms = ms_between(a.started_at, a.finished_at)
    end
    nodes[#nodes + 1] = a
  end
  if #nodes == 1 and not groups[order[1]].earlier then
    for _, c in ipairs(nodes[1].children) do sn.children[#sn.children + 1] = c end
  else
    for _, a in ipairs(nodes) do sn.children[#sn.children + 1] = a end
  end
end

-- A workflow run's steps nested by id; under each, the model and tool
-- calls its attempts made (events of the run tagged with the step) and the
-- runs started inside it.
local function workflow_children(node, run, children, verbose, depth)
  local entries = workflows.journal(node.id) or {}
  local by_step = {}
  for _, en in ipairs(entries) do by_step[en.step] = step_node(en, verbose) end
  local function holder(id) -- the node a step or run of step id goes under
    if not id then return node end
    local n = by_step[id]
    if not n then -- a step whose outcome is not journaled (the run stopped inside it)
      n = { type = "step", step = id, status = "unfinished", children = {} }
      by_step[id] = n
      local up = holder(parent_step(id))
      up.children[#up.children + 1] = n
    end
    return n
  end
  local ids = {}
  for id in pairs(by_step) do ids[#ids + 1] = id end
  for _, id in ipairs(ids) do
    local up = holder(parent_step(id))
    up.children[#up.children + 1] = by_step[id]
  end
  local tagged, retries, steps = {}, {}, {}
  for _, ev in ipairs(run.events or {}) do
    if ev.step then
      if not tagged[ev.step] then
        tagged[ev.step] = {}
        steps[#steps + 1] = ev.step
      end
      local list = tagged[ev.step]
      list[#list + 1] = ev
    elseif ev.kind == "retry" and type(ev.data) == "table" and ev.data.step and math.tointeger(ev.data.attempt) then
      retries[tostring(ev.data.step) .. "#" .. math.tointeger(ev.data.attempt)] =
        { at = ev.at, error = ev.data.error, delay_ms = tonumber(ev.data.delay_ms) or 0 }
    end
  end
  for _, id in ipairs(steps) do step_events(holder(id), tagged[id], retries, verbose) end
  for _, c in ipairs(children) do
    local target = holder(c.parent_step)
    target.children[#target.children + 1] = build_run(c.id, verbose, depth + 1)
  end
  local function order(n)
    for i, c in ipairs(n.children) do c.order = i end -- calls recorded at the same instant keep their order
    table.sort(n.children, function(a, b)
      if a.type == "step" and b.type == "step" then return step_before(a, b) end
      if (a.type == "step") ~= (b.type == "step") then return a.type == "step" end
      if (a.started_at or 0) ~= (b.started_at or 0) then return (a.started_at or 0) < (b.started_at or 0) end
      return a.order < b.order
    end)
    for _, c in ipairs(n.children) do
      c.order = nil
      if c.type == "step" then order(c) end
    end
  end
  order(node)
end

-- The tree of run id (a unique prefix is enough): nil and a message when
-- there is no such run.
function build_run(id, verbose, depth)
  local run, err = runs.show(id)
  if not run then return nil, err end
  local node = run_node(run)
  if verbose then node.input, node.output = run.input, run.output end
  local children = depth < MAX_DEPTH and runs.children(run.id) or {}
  if node.kind == "workflow" then
    workflow_children(node, run, children, verbose, depth)
  else
    local list = event_nodes(run.events, verbose)
    for _, c in ipairs(children) do list[#list + 1] = build_run(c.id, verbose, depth + 1) end
    for i, n in ipairs(list) do n.order = i end
    table.sort(list, function(a, b)
      if (a.started_at or 0) ~= (b.started_at or 0) then return (a.started_at or 0) < (b.started_at or 0) end
      return a.order < b.order
    end)
    for _, n in ipairs(list) do n.order, n.seq = nil, nil end
    node.children = list
  end
  return node
end

function _M.build(id, verbose)
  return build_run(id, verbose, 0)
end

-- ---- text ----

local function duration(ms)
  if not ms then return nil end
  if ms < 1000 then return ("%d ms"):format(ms) end
  return ("%.2f s"):format(ms / 1000)
end

local function usage(n)
  local tin, tout, cost = n.tokens_in or 0, n.tokens_out or 0, n.cost or 0
  if tin == 0 and tout == 0 and cost == 0 and n.type ~= "model" then return nil end
  local text = ("%d in / %d out tokens"):format(tin, tout)
  if cost > 0 then text = text .. ("  $%.6f"):format(cost) end
  return text
end

local function text_of(v)
  if type(v) == "string" then return v end
  if v == nil then return "" end
  local ok, t = pcall(cjson.encode, v)
  return ok and t or tostring(v)
end

local function oneline(v, n)
  local t = text_of(v):gsub("%s+", " ")
  if #t > n then t = t:sub(1, n - 3) .. "..." end
  return t
end

local function label(n)
  local parts
  if n.type == "run" then
    parts = { n.kind, n.name, n.id, n.status, duration(n.ms), usage(n) }
  elseif n.type == "step" then
    local what = n.kind and (n.name and (n.kind .. " " .. n.name) or n.kind) or "?"
    parts = { n.step, what, n.status, duration(n.ms), usage(n),
              (n.attempts or 1) > 1 and (n.attempts .. " attempts") or nil }
  elseif n.type == "attempt" then
    parts = { "attempt " .. n.attempt, n.status, duration(n.ms), usage(n) }
  elseif n.type == "model" then
    parts = { "model", n.model, n.error and "failed" or nil, duration(n.ms), usage(n),
              n.tool_calls and ("%d tool call%s"):format(n.tool_calls, n.tool_calls == 1 and "" or "s") or nil,
              n.cached and "cached" or nil }
  elseif n.type == "tool" then
    parts = { "tool", n.name, n.ok == nil and "no result" or (n.ok and "ok" or "failed"), duration(n.ms) }
  else
    parts = { n.kind, n.data ~= nil and oneline(n.data, 120) or nil }
  end
  local out = {}
  for i = 1, 8 do if parts[i] then out[#out + 1] = tostring(parts[i]) end end
  return table.concat(out, "  ")
end

-- Lines of detail under a node: errors always; with verbose, prompts,
-- arguments and results.
local function details(n, verbose)
  local lines = {}
  local function add(prefix, v)
    local first = true
    for line in (text_of(v) .. "\n"):gmatch("(.-)\n") do
      lines[#lines + 1] = (first and prefix or (" "):rep(#prefix)) .. line
      first = false
    end
  end
  if n.error then add("error: ", oneline(n.error, verbose and 4000 or 300)) end
  if n.type == "tool" and n.result ~= nil and (verbose or n.ok == false) then
    add("result: ", verbose and text_of(n.result) or oneline(n.result, 300))
  end
  if not verbose then return lines end
  if n.type == "run" then
    if n.input ~= nil then add("input: ", n.input) end
    if n.output ~= nil then add("output: ", n.output) end
  elseif n.type == "step" and n.result ~= nil then
    add("result: ", n.result)
  elseif n.type == "tool" and n.arguments ~= nil then
    table.insert(lines, 1, "arguments: " .. text_of(n.arguments))
  elseif n.type == "model" then
    if n.system then add("system: ", n.system) end
    if n.omitted then lines[#lines + 1] = ("(%d earlier messages not recorded)"):format(n.omitted) end
    for _, m in ipairs(n.messages or {}) do
      add(tostring(m.role) .. (m.name and (" " .. m.name) or "") .. ": ", m.content)
      for _, c in ipairs(m.tool_calls or {}) do add("  → " .. tostring(c.name) .. " ", c.arguments) end
    end
  elseif n.type == "event" and n.data ~= nil then
    add("data: ", n.data)
  end
  return lines
end

-- The tree as JSON (a node without children has no `children`).
function _M.json(tree)
  local function strip(n)
    if n.children and #n.children == 0 then n.children = nil end
    for _, c in ipairs(n.children or {}) do strip(c) end
  end
  strip(tree)
  return cjson.encode(tree)
end

function _M.render(tree, verbose)
  local out = {}
  local function walk(n, prefix, last, top)
    local branch = top and "" or (last and "└─ " or "├─ ")
    out[#out + 1] = prefix .. branch .. label(n)
    local inner = top and "" or (prefix .. (last and "   " or "│  "))
    local kids = n.children or {}
    local bar = #kids > 0 and "│  " or "   "
    for _, line in ipairs(details(n, verbose)) do out[#out + 1] = inner .. bar .. line end
    for i, c in ipairs(kids) do walk(c, inner, i == #kids, false) end
  end
  walk(tree, "", true, true)
  return table.concat(out, "\n") .. "\n"
end

return _M
