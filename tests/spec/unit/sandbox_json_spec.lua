-- stdlib/json.lua, the sandbox's JSON (what the workflow journal is written
-- with): exact round trips, escapes, sorted keys, and errors that say where
-- the bad value is. Run through `moonhive run`, inside the sandbox.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")

describe("sandbox json", function()
  lazy_teardown(function() H.cleanup() end)

  local function run(src)
    local res = H.run_script(src)
    assert.equals(0, res.code, H.show(res))
    return res.stdout
  end

  it("encodes plain and escaped text, sorted objects and arrays, and reads them back", function()
    local out = run([[
print(json.encode("plain text"))
print(json.encode('say "hi"\n\tback\\slash \1'))
print(json.encode({b = {1, 2.5, "x"}, a = true, c = {}}))
local v = {name = "n\"q", list = {1, 0.1, 2 ^ 53, -3}, deep = {x = {y = "z"}}}
local back = json.decode(json.encode(v))
print(back.name == v.name, back.list[2] == 0.1, back.list[3] == 2 ^ 53, back.deep.x.y)
]])
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equals('"plain text"', lines[1])
    assert.equals('"say \\"hi\\"\\n\\tback\\\\slash \\u0001"', lines[2])
    assert.equals('{"a":true,"b":[1,2.5,"x"],"c":[]}', lines[3])
    assert.equals("true\ttrue\ttrue\tz", lines[4])
  end)

  it("names where a value JSON cannot hold is", function()
    local out = run([[
print(select(2, pcall(json.encode, {items = {1, {name = print}}})))
print(select(2, pcall(json.encode, {a = {0 / 0}})))
print(select(2, pcall(json.encode, {list = {[true] = 1}})))
local t = {} t.self = t
print(select(2, pcall(json.encode, t)))
]])
    assert.matches("json.encode: value.items[2].name is a function, which JSON cannot hold", out, 1, true)
    assert.matches("json.encode: value.a[1] is not a finite number", out, 1, true)
    assert.matches("json.encode: value.list has a key that is not a string (boolean)", out, 1, true)
    assert.matches("json.encode: value.self.self.self", out, 1, true)
    assert.matches("is nested too deeply (or a cycle)", out, 1, true)
  end)
end)
