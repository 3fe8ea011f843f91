-- moonhive.retry — retries for provider calls: exponential backoff with
-- jitter, honouring Retry-After, only for errors marked retryable (429, 5xx,
-- Anthropic's 529, connection failures), never after a stream has started.
--
-- call(fn, opts, ...): fn(attempt, ...) returns a result, or nil and an
-- error table {message = "...", retryable = bool, retry_after_ms = n?}.
-- (Arguments pass through `...`, so callers need no closure per call.)
-- Options (a request's `retry` table): attempts (4), base_ms (500), max_ms (20000).

local _M = {}

local floor, min, random = math.floor, math.min, math.random
local NO_OPTIONS = {}

function _M.call(fn, opts, ...)
  opts = opts or NO_OPTIONS
  local attempts = tonumber(opts.attempts) or 4
  local base = tonumber(opts.base_ms) or 500
  local cap = tonumber(opts.max_ms) or 20000
  local last
  for attempt = 1, attempts do
    local res, err = fn(attempt, ...)
    if res ~= nil then return res end
    last = err
    local retryable = type(err) == "table" and err.retryable
    if not retryable or attempt == attempts then break end
    local wait = err.retry_after_ms
    if not wait then
      local full = min(cap, base * 2 ^ (attempt - 1))
      wait = floor(full * (0.5 + 0.5 * random()))
    end
    log.info(("retrying after %s (attempt %d of %d, waiting %d ms)"):format(err.message, attempt, attempts, wait))
    sleep(min(wait, cap))
  end
  if type(last) == "table" then return nil, last.message end
  return nil, last
end

-- The error for an HTTP answer that is not a success.
function _M.http_error(res, message)
  local status = res.status
  local retry_after
  local ra = res.headers and res.headers["retry-after"]
  if ra and tonumber(ra) then retry_after = floor(tonumber(ra) * 1000) end
  return {
    message = ("%s (HTTP %d)"):format(message, status),
    retryable = status == 429 or status == 529 or status >= 500,
    retry_after_ms = retry_after,
    status = status,
  }
end

-- Transport failures that another attempt cannot fix: the request or the
-- setup is wrong, not the network.
local permanent = {
  "response body too large", "malformed URL", "unsupported protocol",
  "TLS certificate verification failed", "too many redirects",
}

-- The error for a transport failure (http returned nil, err).
function _M.transport_error(err)
  local message = tostring(err)
  for _, p in ipairs(permanent) do
    if message:find(p, 1, true) == 1 then return { message = message, retryable = false } end
  end
  return { message = message, retryable = true }
end

-- The error of a streamed request that did not end well, or nil: a transport
-- failure or an HTTP error status. Once deltas went out (`emitted`) nothing
-- is retried, so the script never sees a piece twice.
function _M.stream_error(res, err, emitted, message_of)
  if not res then
    local e = _M.transport_error(err)
    e.retryable = e.retryable and not emitted
    return e
  end
  if res.status ~= 200 then return _M.http_error(res, message_of(res.body, "request failed")) end
  return nil
end

return _M
