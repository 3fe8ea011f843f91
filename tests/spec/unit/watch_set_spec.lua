-- Unit specs for lua/moonhive/watch_set.lua (pure Lua, no host): which
-- watched workflow runs a look of the watch loop reads, given the store's
-- change counter (it moves only when another process commits).
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/lua/?.lua;" .. package.path

local watch_set = require "moonhive.watch_set"

local function sorted(ids)
  table.sort(ids)
  return ids
end

describe("moonhive.watch_set", function()
  local set
  before_each(function() set = watch_set.new() end)

  it("reads every watched run at the first look, and none while the counter stays", function()
    set:owned("a", 7)
    set:watch("a", {})
    set:watch("b", {})
    assert.same({ "a", "b" }, sorted(set:due(7))) -- the first look knows no counter yet
    assert.same({}, set:due(7))
    assert.same({}, set:due(7))
    assert.same({}, watch_set.new():due(7))
  end)

  it("reads every watched run once the counter moves, or when it is unknown", function()
    set:watch("a", {})
    set:watch("b", {})
    set:due(1)
    assert.same({ "a", "b" }, sorted(set:due(2)))
    assert.same({}, set:due(2))
    assert.same({ "a", "b" }, sorted(set:due(nil)))
    assert.same({ "a", "b" }, sorted(set:due(nil)))
  end)

  it("skips a run watched since the last look when nothing changed after it became this process's", function()
    set:watch("a", {})
    set:due(5)
    set:owned("b", 5)
    set:watch("b", {})
    assert.same({}, set:due(5))
  end)

  it("reads a run whose change came before the last look but after the run became this process's", function()
    set:watch("a", {})
    set:due(5)
    set:owned("c", 5)       -- begin, with the counter at 5
    -- another process cancels c (the counter moves to 6); a look reads a
    -- but not c, which nobody watches yet
    assert.same({ "a" }, set:due(6))
    set:watch("c", {})      -- the engine's watch starts
    assert.same({ "c" }, set:due(6))
    assert.same({}, set:due(6))
  end)

  it("reads a run watched without a known counter once", function()
    set:due(3)
    set:watch("d", {})
    assert.same({ "d" }, set:due(3))
    assert.same({}, set:due(3))
  end)

  it("reads every run after a look that failed", function()
    set:watch("a", {})
    set:watch("b", {})
    set:due(4)
    set:missed()
    assert.same({ "a", "b" }, sorted(set:due(4)))
  end)

  it("forgets an unwatched run and its counter; lists and finds watched ones", function()
    local e = set:watch("a", { ev = "x" })
    set:owned("b", 1)
    set:watch("b", {})
    assert.equals(e, set:get("a"))
    assert.is_true(set:any())
    assert.same({ "a", "b" }, sorted(set:ids()))
    assert.equals(e, set:unwatch("a"))
    assert.is_nil(set:get("a"))
    assert.is_nil(set:unwatch("a"))
    assert.same({ "b" }, set:due(1))
    set:unwatch("b")
    assert.is_false(set:any())
    assert.same({}, set:due(2))
    -- an owned run that never got watched leaves nothing behind once unwatched
    set:owned("z", 9)
    set:unwatch("z")
    set:watch("z", {})
    assert.is_nil(set:get("z").since)
  end)
end)
