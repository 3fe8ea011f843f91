-- Unit specs for lua/moonhive/registry.lua (pure Lua, no host): the table of
-- current versions host/registry.c keeps — what a failed edit keeps and
-- reports, texts seen once, removal, lookups by name, pins for a new run.
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/lua/?.lua;" .. package.path

describe("moonhive.registry", function()
  local reg, now

  before_each(function()
    now = 1000
    _G.time = { now = function() return now end } -- the runtime's time module
    package.loaded["moonhive.registry"] = nil
    reg = require "moonhive.registry"
  end)
  after_each(function() _G.time = nil end)

  local A = "/p/agents/coder.lua"
  local function load(hash, extra)
    local req = { path = A, display = "agents/coder.lua", kind = "agent", name = "coder", title = "coder",
                  description = "writes code", hash = hash, source = "return agent{} -- " .. hash, listed = true }
    for k, v in pairs(extra or {}) do req[k] = v end
    return reg.loaded(req)
  end

  it("swaps versions in, keeps the current one when an edit fails, and clears the error on the next load", function()
    assert.is_nil(load("h1"))
    local e = reg.get("agent", "coder")
    assert.same({ "h1", 1, "coder" }, { e.hash, e.versions, e.title.name })
    now = 1001
    assert.equals("h1", reg.failed{ path = A, display = "agents/coder.lua", kind = "agent", name = "coder", hash = "h2",
                                    error = "agents/coder.lua:3: unexpected symbol", listed = true })
    e = reg.get("agent", "coder")
    assert.same({ "h1", "agents/coder.lua:3: unexpected symbol", 1001 }, { e.hash, e.last_error, e.error_at })
    assert.equals("h1", load("h3"))
    e = reg.get("agent", "coder")
    assert.same({ "h3", 2 }, { e.hash, e.versions })
    assert.is_nil(e.last_error)
  end)

  it("lists a file that never loaded with its error, and finds it once it loads", function()
    assert.is_nil(reg.failed{ path = A, display = "agents/coder.lua", kind = "agent", name = "coder", hash = "h1",
                              error = "agents/coder.lua:1: boom", listed = true })
    local e = reg.get("agent", "coder")
    assert.same({ "agents/coder.lua:1: boom" }, { e.last_error, e.hash })
    assert.same({}, reg.pins())
    load("h2")
    assert.equals("h2", reg.get("agent", "coder").hash)
  end)

  it("checks a text once per path, forgets on request, drops removed files", function()
    assert.is_true(reg.seen{ path = A, hash = "h1" })
    assert.is_false(reg.seen{ path = A, hash = "h1" })
    assert.is_true(reg.seen{ path = A, hash = "h2" })
    assert.is_true(reg.seen{ path = A }) -- forget
    assert.is_true(reg.seen{ path = A, hash = "h2" })
    load("h2")
    assert.equals("h2", reg.removed{ path = A })
    assert.is_nil(reg.get("agent", "coder"))
    assert.is_nil(reg.removed{ path = A })
    assert.is_true(reg.seen{ path = A, hash = "h2" }) -- a file that comes back is new
  end)

  it("pins every current version; the --watch file is found by path only", function()
    load("h1")
    reg.loaded{ path = "/elsewhere/run.lua", display = "run.lua", kind = "workflow", name = "coder", hash = "w1",
                source = "return workflow{}", listed = false }
    assert.equals("h1", reg.get("agent", "coder").hash)
    assert.is_nil(reg.get("workflow", "coder"))
    assert.equals("w1", reg.entry("/elsewhere/run.lua").hash)
    local pins = reg.pins()
    table.sort(pins, function(a, b) return a.path < b.path end)
    assert.same({ { path = "/elsewhere/run.lua", source = "return workflow{}", hash = "w1" },
                  { path = A, source = "return agent{} -- h1", hash = "h1" } }, pins)
    assert.equals(A, reg.paths{ dir = "/p/agents" })
    assert.equals("", reg.paths{ dir = "/p" })
    local list = reg.list()
    assert.equals(2, #list)
    for _, e in ipairs(list) do assert.is_nil(e.source) end
  end)
end)
