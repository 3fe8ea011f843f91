-- agent — agents for sandboxed scripts. Also a global: `return agent{...}`.
--
--   return agent{
--     name = "researcher",              -- letters, digits, _ and -
--     description = "Finds facts",      -- what other agents and the API see
--     model = "openai/gpt-4o-mini",     -- default: the host's default model
--     system = "You are ...",           -- the system prompt
--     tools = {"calculator", my_tool},  -- built-in names (stdlib/tools/) or tool{} values
--     memory = {short_term = {max_messages = 40, strategy = "trim"|"summarize"},
--               long_term = true | {namespace = "..."}},
--     max_iterations = 10,              -- model calls of the default loop
--     budget = {tokens = 20000, cost = 0.05},
--     temperature = 0.2, max_tokens = 1024,
--     cache = true,                     -- answer repeated model calls from the response cache
--     run = function(self, input, ctx) ... end,  -- optional: replaces the default loop
--   }
--
-- agent:run(input, opts) runs it: as a recorded run (`moonhive runs`) unless
-- opts.ctx makes it part of another one. A recorded run started while the
-- script works for another recorded run is that run's child (`moonhive
-- trace`); opts.memory is its working memory. opts.on_event(ev) sees progress:
-- {kind = "token", text=} while the model streams, "model_call", "tool_call",
-- "tool_result", "delegate", "handoff", "error". Returns the output and a
-- report {run_id=, agent=, version=, status=, usage=, iterations=}; raises on failure
-- (the run is recorded as failed first).
--
-- Without `run`, the default loop: call the model with the conversation and
-- the agent's tools; run the tools it asks for (concurrently when several);
-- send the results back; stop at an answer without tool calls, or fail after
-- max_iterations. Invalid arguments and tool errors go back to the model as
-- tool results, so it can correct itself.
--
-- ctx (the same for the default loop and a custom run):
--   ctx.input, ctx.run_id, ctx.agent, ctx.memory (working memory: one table
--   shared by every agent of the run), ctx.messages (this agent's conversation)
--   ctx:chat{messages=, ...} -> result   (a model call with the agent's model,
--                                          system prompt and tools)
--   ctx:call_tool(name, args) -> ok, result
--   ctx:ask(name, input) -> output        (delegate to agents/NAME.lua)
--   ctx:handoff(name, input?)             (return this: NAME continues the conversation)
--   ctx:remember(text, opts), ctx:recall(query, opts)
--   ctx:emit(kind, data)

local toolmod = require "tool"

local M = {}
local Agent = {}
Agent.__index = Agent
M.Agent = Agent

local DEFAULT_MAX_ITERATIONS = 10
local MAX_DEPTH = 8

-- Definition errors are raised as {message=} and re-raised by M.new at the
-- line of the agent{} call, so they read "agents/x.lua:3: agent: ...".
local function fail(msg) error({ message = "agent: " .. msg }, 0) end

-- ---- definitions ----

local function resolve_tool(t, agent_name, i)
  if toolmod.is_tool(t) then return t end
  if type(t) == "string" then
    if not t:match("^[%a_][%w_]*$") then fail(("%s: tools[%d] '%s' is not a tool name"):format(agent_name, i, t)) end
    local ok, mod = pcall(require, "tools." .. t)
    if not ok then fail(("%s: no built-in tool '%s' (%s)"):format(agent_name, t, tostring(mod))) end
    if not toolmod.is_tool(mod) then fail(("%s: tools/%s.lua does not return a tool{}"):format(agent_name, t)) end
    return mod
  end
  if type(t) == "table" and type(t.run) == "function" then
    local ok, made = pcall(toolmod.new, t)
    if not ok then fail(("%s: tools[%d]: %s"):format(agent_name, i, tostring(made):gsub("^[^:]*:%d+: ", ""))) end
    return made
  end
  fail(("%s: tools[%d] must be a tool{} or a built-in tool's name"):format(agent_name, i))
end

local build

function M.new(def)
  local ok, a = pcall(build, def)
  if ok then return a end
  if type(a) == "table" and a.message then error(a.message, 2) end
  error(a, 0)
end

function build(def)
  if type(def) ~= "table" then fail("expected a table {name=, system=, tools=, ...}") end
  local name = def.name
  if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") or #name > 64 then
    fail("'name' must be letters, digits, '_' or '-' (at most 64), starting with a letter")
  end
  for _, k in ipairs({ "description", "model", "system" }) do
    if def[k] ~= nil and type(def[k]) ~= "string" then fail(("%s: '%s' must be a string"):format(name, k)) end
  end
  if def.run ~= nil and type(def.run) ~= "function" then fail(name .. ": 'run' must be a function(self, input, ctx)") end
  local max_iter = def.max_iterations or DEFAULT_MAX_ITERATIONS
  if math.type(max_iter) ~= "integer" or max_iter < 1 then fail(name .. ": 'max_iterations' must be a whole number >= 1") end
  local tools, by_name = {}, {}
  if def.tools ~= nil and type(def.tools) ~= "table" then fail(name .. ": 'tools' must be a list") end
  for i, t in ipairs(def.tools or {}) do
    local resolved = resolve_tool(t, name, i)
    if by_name[resolved.name] then fail(("%s: two tools are named '%s'"):format(name, resolved.name)) end
    tools[#tools + 1], by_name[resolved.name] = resolved, resolved
  end
  local memory = def.memory or {}
  if type(memory) ~= "table" then fail(name .. ": 'memory' must be a table") end
  local st = memory.short_term or {}
  if st.strategy ~= nil and st.strategy ~= "trim" and st.strategy ~= "summarize" then
    fail(name .. ": memory.short_term.strategy must be 'trim' or 'summarize'")
  end
  if def.cache ~= nil and type(def.cache) ~= "boolean" then fail(name .. ": 'cache' must be true or false") end
  local budget = def.budget or {}
  if type(budget) ~= "table" then fail(name .. ": 'budget' must be {tokens=, cost=}") end
  return setmetatable({
    name = name, description = def.description or "", model = def.model, system = def.system,
    tools = tools, tools_by_name = by_name, max_iterations = max_iter, memory = memory,
    short_term = { max_messages = st.max_messages or 40, strategy = st.strategy or "trim" },
    budget = budget, temperature = def.temperature, max_tokens = def.max_tokens, custom_run = def.run,
    cache = def.cache,
  }, Agent)
end

function M.is_agent(v) return getmetatable(v) == Agent end

-- agents/NAME.lua, loaded once per sandbox; a.version is the SHA-256 of
-- the text it was loaded from (versions.of)
function M.load(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") then
    error(("agent: '%s' is not an agent name"):format(tostring(name)), 2)
  end
  local ok, a = pcall(require, "agents." .. name)
  if not ok then error(("agent: cannot load agents/%s.lua: %s"):format(name, tostring(a)), 2) end
  if not M.is_agent(a) then error(("agent: agents/%s.lua does not return an agent{}"):format(name), 2) end
  if a.version == nil then a.version = versions.of("agents." .. name) end
  return a
end

-- ---- context ----

local Ctx = {}
Ctx.__index = Ctx
M.Ctx = Ctx

local HANDOFF = {}

function Ctx:emit(kind, data)
  local ev = { kind = kind, agent = self.agent.name }
  for k, v in pairs(data or {}) do ev[k] = v end
  if self.on_event then self.on_event(ev) end
  if self.run_id and kind ~= "token" then
    local rec = {}
    for k, v in pairs(ev) do if k ~= "kind" and k ~= "agent" then rec[k] = v end end
    runs.event{ kind = kind, agent = self.agent.name, data = rec }
  end
end

local function usage_now() return llm.usage() end

local function check_budget(ctx)
  local b, u = ctx.agent.budget, usage_now()
  local spent_tokens = (u.input + u.output) - (ctx.usage_start.input + ctx.usage_start.output)
  local spent_cost = u.cost - ctx.usage_start.cost
  if b.tokens and spent_tokens > b.tokens then
    error(("agent '%s' went over its budget of %d tokens (%d used)"):format(ctx.agent.name, b.tokens, spent_tokens), 0)
  end
  if b.cost and spent_cost > b.cost then
    error(("agent '%s' went over its budget of $%.4f ($%.4f spent)"):format(ctx.agent.name, b.cost, spent_cost), 0)
  end
end

function Ctx:chat(opts)
  opts = opts or {}
  local a = self.agent
  local req = {
    model = opts.model or a.model, system = opts.system or self.system or a.system,
    messages = opts.messages or self.messages, temperature = opts.temperature or a.temperature,
    max_tokens = opts.max_tokens or a.max_tokens, tool_choice = opts.tool_choice, agent = a.name,
    response_format = opts.response_format, mock = opts.mock or self.mock,
  }
  if opts.cache ~= nil then req.cache = opts.cache else req.cache = a.cache end
  if opts.tools ~= false and #a.tools > 0 then
    req.tools = {}
    for i, t in ipairs(a.tools) do req.tools[i] = toolmod.spec(t) end
  end
  if self.on_event then
    local emit = self.on_event
    req.stream = function(d)
      if d.content then emit({ kind = "token", agent = a.name, text = d.content }) end
    end
  end
  local res, err = llm.chat(req)
  if not res then
    self:emit("error", { message = err })
    error(("agent '%s': the model call failed: %s"):format(a.name, err), 0)
  end
  if self.on_event then
    self.on_event({ kind = "model_call", agent = a.name, model = res.provider .. "/" .. tostring(res.model),
                    usage = res.usage, cost = res.cost, tool_calls = res.tool_calls and #res.tool_calls or 0 })
  end
  check_budget(self)
  return res
end

function Ctx:call_tool(name, args, id)
  local t = self.agent.tools_by_name[name]
  if not t then
    local names = {}
    for _, x in ipairs(self.agent.tools) do names[#names + 1] = x.name end
    local msg = ("no tool '%s' (this agent can use: %s)"):format(tostring(name),
                #names > 0 and table.concat(names, ", ") or "none")
    self:emit("tool_result", { id = id, name = name, ok = false, result = msg })
    return false, msg
  end
  self:emit("tool_call", { id = id, name = name, arguments = args })
  local ok, result = toolmod.invoke(t, args, self)
  self:emit("tool_result", { id = id, name = name, ok = ok, result = result })
  return ok, result
end

local function input_text(input)
  if type(input) == "string" then return input end
  if input == nil then return "" end
  local ok, text = pcall(json.encode, input)
  return ok and text or tostring(input)
end
M.input_text = input_text -- a value as text: strings as they are, else JSON

function Ctx:ask(name, input)
  if self.depth >= MAX_DEPTH then
    error(("agent '%s': delegation deeper than %d agents"):format(self.agent.name, MAX_DEPTH), 0)
  end
  local other = M.load(name)
  self:emit("delegate", { to = other.name, input = input })
  local output = other:run(input, { ctx = self })
  return output
end

function Ctx:handoff(name, input)
  return setmetatable({ to = name, input = input }, HANDOFF)
end

local function memory_scope(ctx)
  local lt = ctx.agent.memory.long_term
  return { agent = ctx.agent.name, namespace = type(lt) == "table" and lt.namespace or "default" }
end

function Ctx:remember(text, opts)
  local req = memory_scope(self)
  req.text, req.kind = text, opts and opts.kind or "note"
  req.metadata = opts and opts.metadata
  local res, err = memory.remember(req)
  if not res then error(err, 2) end
  return res.id
end

function Ctx:recall(query, opts)
  local req = memory_scope(self)
  req.query, req.k = query, opts and opts.k or 5
  local res, err = memory.search(req)
  if not res then error(err, 2) end
  return res
end

-- ---- short-term memory: the conversation within the model's context ----

-- Keeps the first message (the task) and the latest ones, never splitting an
-- assistant's tool calls from their results; "summarize" replaces what is
-- cut by a model-written summary.
local function fit_conversation(ctx)
  local msgs, max = ctx.messages, ctx.agent.short_term.max_messages
  if #msgs <= max then return end
  local cut = #msgs - max + 1 -- keep msgs[1] and msgs[cut+1 ..]
  while msgs[cut + 1] and msgs[cut + 1].role == "tool" do cut = cut + 1 end
  local dropped = {}
  for i = 2, cut do dropped[#dropped + 1] = msgs[i] end
  local kept = { msgs[1] }
  if ctx.agent.short_term.strategy == "summarize" and #dropped > 0 then
    local lines = {}
    for _, m in ipairs(dropped) do
      lines[#lines + 1] = m.role .. ": " .. input_text(m.content or m.tool_calls)
    end
    local res = ctx:chat{ tools = false, system = "Summarize this conversation excerpt in a few sentences; keep facts, numbers and decisions.",
                          messages = { { role = "user", content = table.concat(lines, "\n") } } }
    kept[2] = { role = "user", content = "Summary of the earlier conversation: " .. tostring(res.content) }
  end
  for i = cut + 1, #msgs do kept[#kept + 1] = msgs[i] end
  ctx.messages = kept
  ctx:emit("memory_trimmed", { dropped = #dropped, strategy = ctx.agent.short_term.strategy })
end

-- ---- the default loop ----

local function run_tools(ctx, calls)
  local results = {}
  if #calls == 1 then
    local c = calls[1]
    results[1] = { ctx:call_tool(c.name, c.arguments, c.id) }
    return results
  end
  local tasks = {}
  for i, c in ipairs(calls) do
    tasks[i] = task.spawn(function() return ctx:call_tool(c.name, c.arguments, c.id) end)
  end
  for i, t in ipairs(tasks) do
    local ok, good, result = t:wait()
    if ok then results[i] = { good, result } else results[i] = { false, tostring(good) } end
  end
  return results
end

function M.default_loop(self, input, ctx)
  if #ctx.messages == 0 then ctx.messages[1] = { role = "user", content = input_text(input) } end
  for i = 1, self.max_iterations do
    ctx.iterations = i
    fit_conversation(ctx)
    local res = ctx:chat()
    local msg = { role = "assistant", content = res.content }
    if res.tool_calls and #res.tool_calls > 0 then msg.tool_calls = res.tool_calls end
    ctx.messages[#ctx.messages + 1] = msg
    if not msg.tool_calls then return res.content end
    for j, r in ipairs(run_tools(ctx, res.tool_calls)) do
      ctx.messages[#ctx.messages + 1] = { role = "tool", tool_call_id = res.tool_calls[j].id,
                                          name = res.tool_calls[j].name,
                                          content = toolmod.result_text(r[1], r[2]) }
    end
  end
  error(("agent '%s' reached max_iterations (%d) without a final answer"):format(self.name, self.max_iterations), 0)
end

-- ---- running ----

local function new_ctx(self, input, opts, parent)
  local ctx = setmetatable({
    agent = self, input = input, messages = {}, depth = parent and parent.depth + 1 or 0,
    memory = parent and parent.memory or opts.memory or {}, run_id = parent and parent.run_id or nil,
    on_event = parent and parent.on_event or opts.on_event, mock = opts.mock or (parent and parent.mock),
    usage_start = usage_now(), iterations = 0,
  }, Ctx)
  -- long-term memory: what this agent remembered about similar tasks
  if self.memory.long_term then
    local ok, found = pcall(ctx.recall, ctx, input_text(input), { k = 3 })
    if ok and #found > 0 then
      local lines = {}
      for _, m in ipairs(found) do lines[#lines + 1] = "- " .. m.text end
      ctx.system = (self.system and self.system .. "\n\n" or "") .. "Relevant memories:\n" .. table.concat(lines, "\n")
    end
  end
  return ctx
end

local function finish_episode(ctx, input, output)
  if ctx.agent.memory.long_term and type(output) == "string" then
    pcall(ctx.remember, ctx, ("Task: %s\nAnswer: %s"):format(input_text(input):sub(1, 2000), output:sub(1, 4000)),
          { kind = "episode" })
  end
end

-- Runs the agent in ctx; handles hand-offs. Returns the output.
local function run_in(self, input, ctx)
  local body = self.custom_run or M.default_loop
  local output = body(self, input, ctx)
  local hops = 0
  while getmetatable(output) == HANDOFF do
    hops = hops + 1
    if hops > MAX_DEPTH then error(("agent '%s': more than %d hand-offs"):format(self.name, MAX_DEPTH), 0) end
    local next_agent = M.load(output.to)
    ctx:emit("handoff", { to = next_agent.name })
    local next_ctx = new_ctx(next_agent, output.input or input, {}, ctx)
    next_ctx.depth = ctx.depth
    next_ctx.messages = ctx.messages -- the conversation continues
    if output.input ~= nil then next_ctx.messages[#next_ctx.messages + 1] = { role = "user", content = input_text(output.input) } end
    ctx, self = next_ctx, next_agent
    output = (next_agent.custom_run or M.default_loop)(next_agent, output.input or input, next_ctx)
  end
  finish_episode(ctx, input, output)
  return output, ctx
end

function Agent:run(input, opts)
  opts = opts or {}
  local parent = opts.ctx
  if parent then
    local ctx = new_ctx(self, input, opts, parent)
    local output = run_in(self, input, ctx)
    return output
  end
  local rec, err = runs.start{ agent = self.name, input = input, version = self.version }
  if not rec then error(err, 2) end
  local ctx = new_ctx(self, input, opts, nil)
  ctx.run_id = rec.id
  local ok, output, last = pcall(run_in, self, input, ctx)
  local u = usage_now()
  local report = { run_id = rec.id, agent = self.name, version = self.version, iterations = (last or ctx).iterations,
                   usage = { input = u.input - ctx.usage_start.input, output = u.output - ctx.usage_start.output,
                             cost = u.cost - ctx.usage_start.cost } }
  if not ok then
    report.status, report.error = "failed", tostring(output)
    pcall(ctx.emit, ctx, "error", { message = report.error })
    runs.finish{ status = "failed", error = report.error }
    error(output, 0)
  end
  report.status = "succeeded"
  runs.finish{ status = "succeeded", output = output }
  return output, report
end

-- ---- `moonhive run FILE` ----

-- An on_event(ev) that shows an agent's progress on stderr: the model's
-- tokens as they stream, tool calls and results, delegations, hand-offs.
-- (The workflow engine shows the agents of wf:call with it too.)
function M.progress()
  local streaming = false
  return function(ev)
    if ev.kind == "token" then
      if not streaming then log.write(("[%s] "):format(ev.agent)) streaming = true end
      log.write(ev.text)
      return
    end
    if streaming then log.write("\n") streaming = false end
    if ev.kind == "tool_call" then
      log.write(("[%s] → %s %s\n"):format(ev.agent, ev.name, input_text(ev.arguments)))
    elseif ev.kind == "tool_result" then
      local text = ev.ok and toolmod.result_text(true, ev.result) or tostring(ev.result)
      if #text > 300 then text = text:sub(1, 297) .. "..." end
      log.write(("[%s] ← %s%s\n"):format(ev.agent, tostring(ev.name), (ev.ok and ": " or " failed: ") .. text))
    elseif ev.kind == "delegate" then
      log.write(("[%s] asks %s\n"):format(ev.agent, ev.to))
    elseif ev.kind == "handoff" then
      log.write(("[%s] hands off to %s\n"):format(ev.agent, ev.to))
    end
  end
end

-- Runs agent `a` (what a script file returned) with the command line's
-- words as input, showing progress on stderr and the answer on stdout (or
-- one JSON object when json_out).
function M.main(a, json_out, ...)
  local args = { ... }
  -- `--input TEXT`, as workflows take it, is the task too (JSON text stays text)
  if args[1] == "--input" and #args == 2 then table.remove(args, 1) end
  local input = table.concat(args, " ")
  if input == "" then error(("agent '%s' needs a task: moonhive run FILE \"task\""):format(a.name), 0) end
  local on_event = not json_out and M.progress() or nil
  local ok, output, report = pcall(a.run, a, input, { on_event = on_event })
  if json_out then
    if not ok then
      print(json.encode({ agent = a.name, status = "failed", error = tostring(output), run_id = runs.current() }))
      error(output, 0)
    end
    report.output = output
    print(json.encode(report))
    return
  end
  if not ok then error(output, 0) end
  print(type(output) == "string" and output or input_text(output))
end

return setmetatable(M, { __call = function(_, def) return M.new(def) end })
