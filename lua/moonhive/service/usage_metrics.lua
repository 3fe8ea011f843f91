-- moonhive.service.usage_metrics — the metric families GET /metrics takes
-- from the store: runs by kind and status, active runs, model calls, errors,
-- cache hits, tokens and cost by provider and model, tool calls by tool and
-- outcome. They are running totals (moonhive.tally) of every process that
-- shares the store, read from a few small tables, so a scrape costs the
-- same with ten runs or a million.

local tally = require "moonhive.tally"

local _M = {}

-- Statuses always shown (as 0 when no run has them), so alerts on them
-- find a series.
local STATUSES = {
  agent = { "running", "succeeded", "failed", "cancelled" },
  workflow = { "pending", "running", "waiting", "succeeded", "failed", "cancelled" },
}

-- Each family's type and help text.
local FAMILIES = {
  moonhive_runs = { "gauge", "Recorded runs by kind and status (agent runs include those a workflow step or "
                    .. "another agent started)." },
  moonhive_active_runs = { "gauge", "Recorded runs executing now (status running), agents and workflows together." },
  moonhive_model_calls_total = { "counter", "Chat calls answered, cache hits included, by provider and model." },
  moonhive_model_errors_total = { "counter", "Chat calls that failed after their retries, by provider and model." },
  moonhive_model_cache_hits_total = { "counter", "Chat calls answered from the response cache, by provider, model." },
  moonhive_model_tokens_total = { "counter", "Tokens of chat calls, by provider, model and direction." },
  moonhive_model_cost_usd_total = { "counter", "Cost of chat calls in US dollars, by provider and model." },
  moonhive_tool_calls_total = { "counter", "Tool calls of agents and workflows (wf:tool), by tool and outcome (ok)." },
}

-- A new family in the list out.
local function family(out, name)
  local fam = { name = name, type = FAMILIES[name][1], help = FAMILIES[name][2], samples = {} }
  out[#out + 1] = fam
  return fam
end

local function sample(fam, labels, value)
  fam.samples[#fam.samples + 1] = { labels = labels, value = value }
end

local function run_families(out, rows)
  local runs = family(out, "moonhive_runs")
  local active = family(out, "moonhive_active_runs")
  local n = {}
  for _, r in ipairs(rows) do n[r.kind .. "\0" .. r.status] = r.n end
  for _, kind in ipairs({ "agent", "workflow" }) do
    for _, status in ipairs(STATUSES[kind]) do
      local key = kind .. "\0" .. status
      sample(runs, { kind = kind, status = status }, n[key] or 0)
      n[key] = nil
    end
  end
  for _, r in ipairs(rows) do -- statuses or kinds beyond the usual ones
    if n[r.kind .. "\0" .. r.status] then sample(runs, { kind = r.kind, status = r.status }, r.n) end
  end
  local running = 0
  for _, r in ipairs(rows) do if r.status == "running" then running = running + r.n end end
  sample(active, nil, running)
end

local function model_families(out, rows)
  local calls = family(out, "moonhive_model_calls_total")
  local errors = family(out, "moonhive_model_errors_total")
  local hits = family(out, "moonhive_model_cache_hits_total")
  local tokens = family(out, "moonhive_model_tokens_total")
  local cost = family(out, "moonhive_model_cost_usd_total")
  for _, r in ipairs(rows) do
    local l = { provider = r.provider, model = r.model }
    sample(calls, l, r.calls)
    sample(errors, l, r.errors)
    sample(hits, l, r.cache_hits)
    sample(tokens, { provider = r.provider, model = r.model, direction = "input" }, r.tokens_in)
    sample(tokens, { provider = r.provider, model = r.model, direction = "output" }, r.tokens_out)
    sample(cost, l, ("%.10g"):format(r.cost))
  end
end

local function tool_families(out, rows)
  local calls = family(out, "moonhive_tool_calls_total")
  for _, r in ipairs(rows) do sample(calls, { tool = r.tool, ok = r.ok == 1 and "true" or "false" }, r.calls) end
end

-- The families, for metrics.render; none when the store cannot be read
-- (the error is logged).
function _M.families()
  local t, err = tally.totals()
  if not t then
    log.error("metrics: cannot read the store's totals: " .. tostring(err))
    return {}
  end
  local out = {}
  run_families(out, t.runs)
  model_families(out, t.models)
  tool_families(out, t.tools)
  return out
end

return _M
