-- moonhive.providers.common — what the providers share: JSON without nulls,
-- message text, tool-call argument decoding, the stream-break error.

local cjson = require "cjson"
local host = require "host"

local _M = {}

_M.null = cjson.null

-- Decodes JSON text; nil and a message when it is not JSON.
function _M.decode(text)
  local ok, value = pcall(cjson.decode, text)
  if not ok then return nil, "malformed JSON from the provider" end
  return value
end

-- A decoded value with JSON nulls removed (they cannot cross into sandboxes)
-- and whole numbers made integers again (lua-cjson decodes every number as
-- a float, so 42 would print as 42.0).
function _M.strip_nulls(v)
  if v == cjson.null then return nil end
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    if x ~= cjson.null then out[k] = _M.strip_nulls(x) end
  end
  return out
end

-- Arguments of a tool call: a table decoded from the JSON text (an invalid
-- text becomes {_raw = text}, so the agent can report it to the model).
function _M.tool_arguments(text)
  if type(text) == "table" then return _M.strip_nulls(text) end
  if type(text) ~= "string" or text == "" then return {} end
  local v = _M.decode(text)
  if type(v) ~= "table" then return { _raw = text } end
  return _M.strip_nulls(v)
end

-- The text of a message's content (a string, or a list of parts).
function _M.text_of(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return "" end
  local parts = {}
  for _, p in ipairs(content) do
    if type(p) == "string" then parts[#parts + 1] = p
    elseif type(p) == "table" and type(p.text) == "string" then parts[#parts + 1] = p.text end
  end
  return table.concat(parts)
end

function _M.encode(v) return cjson.encode(v) end

-- The value of the JSON string that follows `prefix` (which ends with the
-- opening quote) in JSON text, escapes decoded; nil when there is none.
-- Streams send hundreds of small chunks whose only news is one such string:
-- reading it in C (host/mod_jsonscan.c) costs a fraction of decoding the
-- whole chunk, and anything unusual falls back to the full decoder.
_M.string_after = require("jsonscan").string_after

-- A provider's URLs: url_for(path) is the base URL (the environment
-- variable's value, else the default, without trailing slashes) followed by
-- path. Each URL is built once and kept while the variable keeps its value.
function _M.url_maker(env_name, default)
  local seen, urls = nil, {}
  return function(path)
    local base = host.env(env_name) or default
    if base ~= seen then seen, urls = base, {} end
    local url = urls[path]
    if not url then
      if base:byte(-1) == 47 then base = base:gsub("/+$", "") end -- a trailing "/"
      url = base .. path
      urls[path] = url
    end
    return url
  end
end

-- A string field of a decoded value, or nil (JSON null, a number...).
function _M.str(v)
  if type(v) == "string" then return v end
  return nil
end

-- A count from a decoded value, as an integer.
function _M.count(v)
  v = tonumber(v)
  if not v then return 0 end
  return math.tointeger(v) or math.floor(v)
end

-- A provider's POST: http.request with the options the providers share,
-- built in one table (this runs once per model call). `timeout` is what
-- remains of the call's total (llm.lua spreads it over the attempts);
-- `sse_data`, when given, receives a stream's events (data, event name),
-- but for those `sse_text` takes (host/mod_http.c).
function _M.post(req, url, headers, body, auth, sse_data, sse_text)
  return http.request {
    url = url, method = "POST", headers = headers, body = body, auth = auth,
    sse_data = sse_data, sse_text = sse_text,
    timeout = req.timeout_left or req.timeout,    -- total, ms (default: none)
    connect_timeout = req.connect_timeout or 10000,
    idle_timeout = req.stall_timeout or 60000,    -- a stream that stalls this long fails
  }
end

-- The error message in a provider's error body, if it has one.
function _M.error_message(body, fallback)
  local v = type(body) == "string" and _M.decode(body)
  if type(v) == "table" and type(v.error) == "table" and type(v.error.message) == "string" then
    return v.error.message
  end
  return fallback
end

return _M
