-- moonhive.service.metrics — the service's counters and latency histograms,
-- written out in the Prometheus text format (GET /metrics). Labels come
-- from route patterns, never from raw paths, so their number stays bounded.

local _M = {}

local BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local requests = {}   -- "method\0route\0status" -> count
local latency = {}    -- "method\0route" -> {counts per bucket, sum, count}
local started = os.time()

function _M.observe(method, route, status, seconds)
  local key = method .. "\0" .. route .. "\0" .. status
  requests[key] = (requests[key] or 0) + 1
  local lkey = method .. "\0" .. route
  local h = latency[lkey]
  if not h then
    h = { buckets = {}, sum = 0, count = 0 }
    for i = 1, #BUCKETS do h.buckets[i] = 0 end
    latency[lkey] = h
  end
  for i, le in ipairs(BUCKETS) do
    if seconds <= le then h.buckets[i] = h.buckets[i] + 1 end
  end
  h.sum = h.sum + seconds
  h.count = h.count + 1
end

local function label(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The exposition text. `extra` is a list of {name=, help=, type=, samples =
-- {{labels = {k = v}, value = n}, ...}} families other modules contribute.
function _M.render(extra)
  local out = {}
  local function add(s) out[#out + 1] = s end
  add("# HELP moonhive_http_requests_total HTTP requests answered, by method, route and status.")
  add("# TYPE moonhive_http_requests_total counter")
  for _, key in ipairs(sorted_keys(requests)) do
    local m, r, s = key:match("^(.-)%z(.-)%z(.*)$")
    add(('moonhive_http_requests_total{method="%s",route="%s",status="%s"} %d'):format(label(m), label(r), s, requests[key]))
  end
  add("# HELP moonhive_http_request_duration_seconds Time to handle a request, by method and route.")
  add("# TYPE moonhive_http_request_duration_seconds histogram")
  for _, key in ipairs(sorted_keys(latency)) do
    local m, r = key:match("^(.-)%z(.*)$")
    local h = latency[key]
    local l = ('method="%s",route="%s"'):format(label(m), label(r))
    for i, le in ipairs(BUCKETS) do
      add(('moonhive_http_request_duration_seconds_bucket{%s,le="%g"} %d'):format(l, le, h.buckets[i]))
    end
    add(('moonhive_http_request_duration_seconds_bucket{%s,le="+Inf"} %d'):format(l, h.count))
    add(('moonhive_http_request_duration_seconds_sum{%s} %.6f'):format(l, h.sum))
    add(('moonhive_http_request_duration_seconds_count{%s} %d'):format(l, h.count))
  end
  for _, fam in ipairs(extra or {}) do
    add(("# HELP %s %s"):format(fam.name, fam.help))
    add(("# TYPE %s %s"):format(fam.name, fam.type))
    for _, smp in ipairs(fam.samples) do
      local labels = {}
      for _, k in ipairs(sorted_keys(smp.labels or {})) do
        labels[#labels + 1] = ('%s="%s"'):format(k, label(smp.labels[k]))
      end
      local l = #labels > 0 and "{" .. table.concat(labels, ",") .. "}" or ""
      add(("%s%s %s"):format(fam.name, l, smp.value))
    end
  end
  add("# HELP moonhive_uptime_seconds Seconds since the service started.")
  add("# TYPE moonhive_uptime_seconds gauge")
  add(("moonhive_uptime_seconds %d"):format(os.time() - started))
  return table.concat(out, "\n") .. "\n"
end

return _M
