-- retry.lua — call a function again after it fails, waiting between attempts
-- with exponential backoff and jitter. Scripts use it as `require "retry"`.
--
--   local retry = require "retry"
--   local res, err = retry.call(function(attempt)
--     local r, e = http.get(url)
--     if r and r.status < 500 then return r end
--     return nil, e or ("status " .. r.status)
--   end, { attempts = 4, base_ms = 200, max_ms = 5000 })
--
-- fn returns a value on success, or nil and an error to be retried.
-- Options: attempts (default 3), base_ms (100), max_ms (10000), jitter (0..1,
-- default 0.5: each wait is shortened by up to that fraction), retry_if
-- (function(err) -> boolean; default: retry every error), sleep (a function
-- of milliseconds; default the host's sleep).

local _M = {}

local floor, min, random = math.floor, math.min, math.random

local function check_options(opts)
  opts = opts or {}
  local attempts = opts.attempts or 3
  assert(type(attempts) == "number" and attempts >= 1, "retry: attempts must be a number >= 1")
  local jitter = opts.jitter or 0.5
  assert(type(jitter) == "number" and jitter >= 0 and jitter <= 1, "retry: jitter must be between 0 and 1")
  return {
    attempts = floor(attempts),
    base_ms = opts.base_ms or 100,
    max_ms = opts.max_ms or 10000,
    jitter = jitter,
    retry_if = opts.retry_if,
    sleep = opts.sleep or sleep,
  }
end

-- The wait before attempt n + 1, after n failures (milliseconds).
function _M.delay(n, opts)
  local o = check_options(opts)
  local full = min(o.max_ms, o.base_ms * 2 ^ (n - 1))
  return floor(full * (1 - o.jitter * random()))
end

function _M.call(fn, opts)
  assert(type(fn) == "function", "retry.call: a function is required")
  local o = check_options(opts)
  local err
  for attempt = 1, o.attempts do
    local value, e = fn(attempt)
    if value ~= nil then return value end
    err = e
    if attempt == o.attempts or (o.retry_if and not o.retry_if(err)) then break end
    o.sleep(_M.delay(attempt, o))
  end
  return nil, err
end

return _M
