-- moonhive.cli — commands the trusted runtime answers for the CLI
-- (host/cli_runtime.c): each takes the command's arguments as a list of
-- strings and returns the text for stdout, or nil and a message.

local cjson = require "cjson"
local runs = require "moonhive.runs"
local trace = require "moonhive.trace"
local workflows = require "moonhive.workflows"

local _M = {}

local function when(t)
  if not t then return "-" end
  return os.date("!%Y-%m-%d %H:%M:%S", math.floor(t))
end

local function duration(a, b)
  if not (a and b) then return "-" end
  local ms = (b - a) * 1000
  if ms < 1000 then return ("%d ms"):format(math.floor(ms + 0.5)) end
  return ("%.1f s"):format(ms / 1000)
end

local function short(v, n)
  local text = type(v) == "string" and v or cjson.encode(v)
  text = text:gsub("%s+", " ")
  if #text > n then text = text:sub(1, n - 3) .. "..." end
  return text
end

local function list(opts)
  local rows, err = runs.list(opts.limit)
  if not rows then return nil, err end
  if opts.json then return cjson.encode(rows) .. "\n" end
  if #rows == 0 then return "no runs recorded yet\n" end
  local out = { ("%-24s %-20s %-10s %-19s %9s %8s %10s"):format("ID", "AGENT", "STATUS", "STARTED (UTC)",
                                                               "TIME", "TOKENS", "COST") }
  for _, r in ipairs(rows) do
    out[#out + 1] = ("%-24s %-20s %-10s %-19s %9s %8d %10s"):format(r.id, short(r.agent, 20), r.status,
      when(r.started_at), duration(r.started_at, r.finished_at), (r.tokens_in or 0) + (r.tokens_out or 0),
      ("$%.6f"):format(r.cost or 0))
  end
  return table.concat(out, "\n") .. "\n"
end

local function show(id, opts)
  local run, err = runs.show(id)
  if not run then return nil, err end
  run.steps = workflows.journal(run.id)
  if opts.json then return cjson.encode(run) .. "\n" end
  local out = {
    ("run %s  agent %s  %s%s"):format(run.id, run.agent, run.status,
                                      run.version and ("  version " .. run.version:sub(1, 12)) or ""),
    ("started %s  took %s  tokens %d in / %d out  cost $%.6f"):format(when(run.started_at),
      duration(run.started_at, run.finished_at), run.tokens_in or 0, run.tokens_out or 0, run.cost or 0),
    "input:  " .. short(run.input, 200),
  }
  if run.output ~= nil then out[#out + 1] = "output: " .. short(run.output, 2000) end
  if run.error then out[#out + 1] = "error:  " .. run.error end
  out[#out + 1] = ("events (%d):"):format(#run.events)
  for _, ev in ipairs(run.events) do
    local kind = ev.kind -- a workflow step's call says which step and attempt: "model_call [2.1.1#1]"
    if ev.step then kind = ("%s [%s#%d]"):format(kind, ev.step, math.tointeger(ev.attempt) or 1) end
    out[#out + 1] = ("  %3d  +%-9s %-12s %-14s %s"):format(ev.seq, duration(run.started_at, ev.at), ev.agent or "-",
                                                          kind, ev.data ~= nil and short(ev.data, 160) or "")
  end
  if run.steps then
    out[#out + 1] = ("steps (%d journaled):"):format(#run.steps)
    for _, st in ipairs(run.steps) do
      local what = st.name and (st.kind .. " " .. st.name) or st.kind
      if st.version then what = what .. "@" .. st.version:sub(1, 8) end -- the agent file's version
      local shown = st.status == "error" and ("error: " .. tostring(st.error)) or (st.result or "")
      out[#out + 1] = ("  %-8s +%-9s %-24s %-8s %s"):format(st.step, duration(run.started_at, st.at), short(what, 24),
                                                           st.status, short(shown, 120))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

function _M.runs(args)
  local opts, words = { limit = 20 }, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--json" then opts.json = true
    elseif a == "--limit" then
      i = i + 1
      opts.limit = math.tointeger(tonumber(args[i]))
      if not opts.limit or opts.limit < 1 then return nil, "--limit needs a positive whole number" end
    elseif a:sub(1, 2) == "--" then return nil, ("unknown option '%s' (see moonhive runs --help)"):format(a)
    else words[#words + 1] = a end
    i = i + 1
  end
  local sub = words[1] or "list"
  if sub == "list" then return list(opts) end
  if sub == "show" then
    if not words[2] then return nil, "runs show needs a run id (see moonhive runs)" end
    return show(words[2], opts)
  end
  if sub == "cancel" then
    if not words[2] then return nil, "runs cancel needs a run id (see moonhive runs)" end
    local id, err = workflows.cancel(words[2])
    if not id then return nil, err end
    return ("run %s cancelled\n"):format(id)
  end
  if sub == "signal" then
    if not words[2] or not words[3] then return nil, "usage: moonhive runs signal ID NAME [JSON]" end
    local id, err = workflows.signal(words[2], words[3], words[4])
    if not id then return nil, err end
    return ("signal '%s' sent to run %s\n"):format(words[3], id)
  end
  return nil, ("unknown subcommand '%s' (list, show, resume, cancel or signal)"):format(sub)
end

-- `moonhive trace ID [--json] [--verbose]`
function _M.trace(args)
  local id, json_out, verbose
  for _, a in ipairs(args) do
    if a == "--json" then json_out = true
    elseif a == "--verbose" or a == "-v" then verbose = true
    elseif a:sub(1, 1) == "-" then return nil, ("unknown option '%s' (see moonhive trace --help)"):format(a)
    elseif id then return nil, "trace takes one run id (see moonhive trace --help)"
    else id = a end
  end
  if not id then return nil, "trace needs a run id (see moonhive runs)" end
  local tree, err = trace.build(id, verbose)
  if not tree then return nil, err end
  if json_out then return trace.json(tree) .. "\n" end
  return trace.render(tree, verbose)
end

return _M
