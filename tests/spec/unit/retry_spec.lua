-- Unit specs for stdlib/retry.lua (pure Lua, no host): attempts, backoff
-- growth and cap, jitter bounds, early stop, and the returned error.
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/stdlib/?.lua;" .. package.path
local retry = require "retry"

describe("retry", function()
  local waits
  local function fake_sleep(ms) waits[#waits + 1] = ms end
  before_each(function() waits = {} end)

  it("returns the first success without waiting", function()
    local res = retry.call(function() return "ok" end, { sleep = fake_sleep })
    assert.equal("ok", res)
    assert.same({}, waits)
  end)

  it("retries failures up to the number of attempts", function()
    local calls = 0
    local res, err = retry.call(function(n) calls = n return nil, "fail " .. n end,
      { attempts = 4, sleep = fake_sleep, jitter = 0 })
    assert.is_nil(res)
    assert.equal("fail 4", err)
    assert.equal(4, calls)
    assert.same({ 100, 200, 400 }, waits)
  end)

  it("succeeds after some failures", function()
    local res = retry.call(function(n) if n < 3 then return nil, "no" end return n end,
      { attempts = 5, sleep = fake_sleep, jitter = 0 })
    assert.equal(3, res)
    assert.equal(2, #waits)
  end)

  it("caps the backoff at max_ms", function()
    retry.call(function() return nil, "x" end,
      { attempts = 8, base_ms = 100, max_ms = 450, jitter = 0, sleep = fake_sleep })
    assert.same({ 100, 200, 400, 450, 450, 450, 450 }, waits)
  end)

  it("keeps jittered waits between (1 - jitter) and 1 of the full wait", function()
    for _ = 1, 200 do
      local d = retry.delay(3, { base_ms = 100, jitter = 0.5 })
      assert.is_true(d >= 200 and d <= 400, "delay " .. d)
    end
  end)

  it("stops early when retry_if says the error is final", function()
    local calls = 0
    local res, err = retry.call(function() calls = calls + 1 return nil, "400 bad request" end, {
      attempts = 5, sleep = fake_sleep,
      retry_if = function(e) return not e:match("^4") end,
    })
    assert.is_nil(res)
    assert.equal("400 bad request", err)
    assert.equal(1, calls)
  end)

  it("rejects bad options clearly", function()
    assert.has_error(function() retry.call(function() end, { attempts = 0 }) end,
      "retry: attempts must be a number >= 1")
    assert.has_error(function() retry.call(function() end, { jitter = 2 }) end,
      "retry: jitter must be between 0 and 1")
  end)
end)
