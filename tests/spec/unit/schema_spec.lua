-- Unit specs for stdlib/schema.lua (pure Lua, no host): every keyword passing
-- and failing, error paths and messages, collecting and capping errors, the
-- depth and cycle guards, schema.check's refusals, describe_errors, and
-- adversarial values (huge arrays and objects, tables that contain themselves).
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/stdlib/?.lua;" .. package.path
local schema = require "schema"

-- The errors of a failing validation (asserts that it fails).
local function errors_of(value, sch)
  local ok, errs = schema.validate(value, sch)
  assert.is_false(ok, "expected the value to fail validation")
  assert.is_table(errs)
  return errs
end

-- The single error of a failing validation.
local function error_of(value, sch)
  local errs = errors_of(value, sch)
  assert.equal(1, #errs, "expected one error, got: " .. table.concat(errs, " | "))
  return errs[1]
end

local function passes(value, sch)
  local ok, errs = schema.validate(value, sch)
  assert.is_true(ok, errs and table.concat(errs, " | "))
  assert.is_nil(errs)
end

-- A chain of `depth` tables nested under the root: {{{...}}}.
local function nest(depth)
  local top = {}
  local cur = top
  for _ = 1, depth do
    local inner = {}
    cur[1] = inner
    cur = inner
  end
  return top
end

describe("schema.validate", function()
  describe("type", function()
    it("accepts each JSON type for its own name", function()
      passes({ a = 1 }, { type = "object" })
      passes({ 1, 2 }, { type = "array" })
      passes("x", { type = "string" })
      passes(1.5, { type = "number" })
      passes(7, { type = "number" })
      passes(7, { type = "integer" })
      passes(true, { type = "boolean" })
      passes(false, { type = "boolean" })
      passes(nil, { type = "null" })
    end)

    it("refuses other types with 'expected X, got Y'", function()
      assert.equal("$: expected object, got string", error_of("x", { type = "object" }))
      assert.equal("$: expected array, got object", error_of({ a = 1 }, { type = "array" }))
      assert.equal("$: expected object, got array", error_of({ 1 }, { type = "object" }))
      assert.equal("$: expected string, got number", error_of(5, { type = "string" }))
      assert.equal("$: expected number, got string", error_of("5", { type = "number" }))
      assert.equal("$: expected boolean, got number", error_of(0, { type = "boolean" }))
      assert.equal("$: expected null, got boolean", error_of(false, { type = "null" }))
      assert.equal("$: expected string, got null", error_of(nil, { type = "string" }))
      assert.equal("$: expected object, got function", error_of(print, { type = "object" }))
    end)

    it("takes integers as integer-typed numbers or floats without a fraction", function()
      passes(3.0, { type = "integer" })
      passes(-0.0, { type = "integer" })
      passes(math.maxinteger, { type = "integer" })
      assert.equal("$: expected integer, got 3.5", error_of(3.5, { type = "integer" }))
      assert.equal("$: expected integer, got string", error_of("3", { type = "integer" }))
    end)

    it("refuses NaN and infinities as numbers", function()
      assert.equal("$: expected number, got NaN", error_of(0 / 0, { type = "number" }))
      assert.equal("$: expected number, got infinity", error_of(math.huge, { type = "number" }))
      assert.equal("$: expected integer, got -infinity", error_of(-math.huge, { type = "integer" }))
    end)

    it("accepts any type of a list", function()
      local sch = { type = { "string", "integer", "null" } }
      passes("a", sch)
      passes(4, sch)
      passes(nil, sch)
      assert.equal("$: expected string, integer or null, got boolean", error_of(true, sch))
      assert.equal("$: expected string or number, got object",
        error_of({ a = 1 }, { type = { "string", "number" } }))
    end)

    it("lets an empty table be an object and an array", function()
      passes({}, { type = "object" })
      passes({}, { type = "array" })
      assert.equal("$: expected string, got empty object/array", error_of({}, { type = "string" }))
    end)

    it("refuses tables with mixed keys or gaps as objects and arrays", function()
      assert.equal("$: expected object, got table with mixed keys",
        error_of({ 1, a = 2 }, { type = "object" }))
      assert.equal("$: expected array, got table with mixed keys",
        error_of({ 1, a = 2 }, { type = "array" }))
      assert.equal("$: expected array, got array with gaps",
        error_of({ [1] = "a", [3] = "c" }, { type = "array" }))
      assert.equal("$: expected array, got table with mixed keys",
        error_of({ [0] = "a", [1] = "b" }, { type = "array" }))
    end)
  end)

  describe("objects", function()
    local person = {
      type = "object",
      required = { "name", "age" },
      properties = {
        name = { type = "string" },
        age = { type = "integer" },
        address = {
          type = "object",
          required = { "city" },
          properties = { city = { type = "string" }, zip = { type = "string" } },
        },
      },
    }

    it("accepts an object that has its required properties of the right types", function()
      passes({ name = "Ada", age = 36 }, person)
      passes({ name = "Ada", age = 36, address = { city = "London" }, extra = true }, person)
    end)

    it("names a missing required property", function()
      assert.equal('$: missing required property "age"', error_of({ name = "Ada" }, person))
      assert.equal('$.address: missing required property "city"',
        error_of({ name = "Ada", age = 1, address = { zip = "1" } }, person))
    end)

    it("checks present properties against their schemas, with nested paths", function()
      assert.equal("$.age: expected integer, got string", error_of({ name = "Ada", age = "36" }, person))
      assert.equal("$.address.city: expected string, got number",
        error_of({ name = "Ada", age = 1, address = { city = 5 } }, person))
    end)

    it("does not apply object keywords to other types", function()
      passes("text", { required = { "a" }, properties = { a = { type = "string" } } })
      passes({ 1, 2 }, { required = { "a" }, minProperties = 5 })
    end)

    it("refuses unknown properties when additionalProperties is false, listing the allowed ones", function()
      local sch = { type = "object", additionalProperties = false,
                    properties = { color = { type = "string" }, size = { type = "integer" } } }
      passes({ color = "red" }, sch)
      passes({}, sch)
      assert.equal('$.colour: is not an allowed property (allowed: "color", "size")',
        error_of({ colour = "red" }, sch))
      assert.equal('$["a b"]: is not an allowed property (no properties are allowed)',
        error_of({ ["a b"] = 1 }, { additionalProperties = false }))
    end)

    it("checks additional properties against a schema", function()
      local sch = { properties = { id = { type = "integer" } }, additionalProperties = { type = "string" } }
      passes({ id = 1, x = "a", y = "b" }, sch)
      assert.equal("$.y: expected string, got boolean", error_of({ id = 1, x = "a", y = true }, sch))
      passes({ anything = 1 }, { additionalProperties = true })
    end)

    it("counts properties for minProperties and maxProperties", function()
      local sch = { type = "object", minProperties = 1, maxProperties = 2 }
      passes({ a = 1 }, sch)
      passes({ a = 1, b = 2 }, sch)
      assert.equal("$: must have at least 1 property, got 0", error_of({}, sch))
      assert.equal("$: must have at most 2 properties, got 3", error_of({ a = 1, b = 2, c = 3 }, sch))
    end)

    it("quotes property names that are not identifiers and cuts long ones", function()
      local sch = { properties = { ["my key"] = { type = "string" }, ["q\"\n"] = { type = "string" } } }
      assert.equal('$["my key"]: expected string, got number', error_of({ ["my key"] = 1 }, sch))
      assert.equal('$["q\\"\\n"]: expected string, got number', error_of({ ["q\"\n"] = 1 }, sch))
      local long = string.rep("k", 500)
      local e = error_of({ [long] = 1 }, { additionalProperties = false })
      assert.equal('$["' .. string.rep("k", 60) .. '..."]: is not an allowed property (no properties are allowed)', e)
    end)

    it("reads values raw, without calling metamethods", function()
      local called = false
      local v = setmetatable({ name = "x" }, { __index = function() called = true return "y" end,
                                              __pairs = function() called = true return next, {} end })
      passes(v, { required = { "name" }, properties = { other = { type = "number" } },
                  additionalProperties = { type = "string" } })
      assert.equal('$: missing required property "missing"', error_of(v, { required = { "missing" } }))
      assert.is_false(called)
    end)
  end)

  describe("arrays", function()
    it("checks every item against items, naming indices from 0", function()
      local sch = { type = "object", properties = { items = { type = "array", items = {
        type = "object", properties = { name = { type = "string" } } } } } }
      passes({ items = { { name = "a" }, { name = "b" } } }, sch)
      assert.equal("$.items[2].name: expected string, got number",
        error_of({ items = { { name = "a" }, { name = "b" }, { name = 3 } } }, sch))
    end)

    it("checks arrays of arrays", function()
      local sch = { type = "array", items = { type = "array", items = { type = "number" } } }
      passes({ { 1, 2 }, {}, { 3 } }, sch)
      assert.equal("$[1][0]: expected number, got string", error_of({ { 1 }, { "x" } }, sch))
    end)

    it("counts items for minItems and maxItems", function()
      local sch = { type = "array", minItems = 1, maxItems = 2 }
      passes({ "a" }, sch)
      passes({ "a", "b" }, sch)
      assert.equal("$: must have at least 1 item, got 0", error_of({}, sch))
      assert.equal("$: must have at most 2 items, got 3", error_of({ 1, 2, 3 }, sch))
    end)

    it("finds duplicates for uniqueItems, with 1 and 1.0 equal and key order ignored", function()
      local sch = { type = "array", uniqueItems = true }
      passes({ 1, 2, "1", true, false, { a = 1 }, { a = 2 }, { 1 }, { "1" } }, sch)
      assert.equal("$: items must be unique, but [0] and [2] are equal", error_of({ 1, 2, 1 }, sch))
      assert.equal("$: items must be unique, but [0] and [1] are equal", error_of({ 1, 1.0 }, sch))
      assert.equal("$: items must be unique, but [1] and [2] are equal",
        error_of({ "x", { a = 1, b = { 2, 3 } }, { b = { 2, 3 }, a = 1 } }, sch))
      passes({ 1, 1 }, { uniqueItems = false })
    end)

    it("tells apart large integers inside tables for uniqueItems", function()
      passes({ { math.maxinteger }, { math.maxinteger - 1 } }, { uniqueItems = true })
      assert.equal("$: items must be unique, but [0] and [1] are equal",
        error_of({ { n = math.maxinteger }, { n = math.maxinteger } }, { uniqueItems = true }))
    end)

    it("finds equal objects whatever order their keys are stored in", function()
      local a, b = {}, {}
      for i = 1, 10 do a["k" .. i] = i end
      for i = 1, 60 do b["pad" .. i] = true end    -- b's hash part grows ...
      for i = 10, 1, -1 do b["k" .. i] = i end
      for i = 1, 60 do b["pad" .. i] = nil end     -- ... and keeps its size
      local order_a, order_b = {}, {}
      for k in next, a do order_a[#order_a + 1] = k end
      for k in next, b do order_b[#order_b + 1] = k end
      assert.are_not.same(order_a, order_b)         -- the case this spec is about
      assert.equal("$: items must be unique, but [0] and [1] are equal",
        error_of({ a, b }, { uniqueItems = true }))
      passes(b, { const = a })
    end)

    it("compares big objects (sorted in Lua, not in one C call) by content", function()
      local a, b, c = {}, {}, {}
      for i = 1, 6000 do a["k" .. i] = i end
      for i = 6000, 1, -1 do b["k" .. i] = i; c["k" .. i] = i end
      c.k3000 = -1
      assert.equal("$: items must be unique, but [0] and [1] are equal",
        error_of({ a, b }, { uniqueItems = true }))
      passes({ a, c }, { uniqueItems = true })
    end)

    it("does not apply array keywords to other types", function()
      passes({ a = 1 }, { items = { type = "string" }, minItems = 3 })
      passes("abc", { maxItems = 1 })
    end)
  end)

  describe("strings", function()
    it("counts UTF-8 characters, not bytes, for minLength and maxLength", function()
      local sch = { type = "string", minLength = 2, maxLength = 5 }
      passes("héllo", sch)              -- 6 bytes, 5 characters
      passes("日本", sch)
      assert.equal("$: must be at least 2 characters long, got 1", error_of("é", sch))
      assert.equal("$: must be at most 5 characters long, got 6", error_of("héllo!", sch))
      assert.equal("$: must be at least 1 character long, got 0", error_of("", { minLength = 1 }))
    end)

    it("reports invalid UTF-8 once when a length is checked", function()
      local sch = { minLength = 1, maxLength = 10 }
      assert.equal("$: is not valid UTF-8", error_of("ab\255", sch))
      assert.equal("$: is not valid UTF-8", error_of("\xED\xA0\x80", sch))   -- a surrogate
      passes("ab\255", { type = "string" })
    end)

    it("ignores pattern and format", function()
      passes("not-an-email", { type = "string", format = "email", pattern = "^[0-9]+$" })
    end)
  end)

  describe("numbers", function()
    it("checks minimum and maximum inclusively", function()
      local sch = { type = "number", minimum = 1, maximum = 10 }
      passes(1, sch)
      passes(10, sch)
      passes(5.5, sch)
      assert.equal("$: must be >= 1, got 0", error_of(0, sch))
      assert.equal("$: must be <= 10, got 10.5", error_of(10.5, sch))
    end)

    it("checks exclusiveMinimum and exclusiveMaximum strictly", function()
      local sch = { exclusiveMinimum = 0, exclusiveMaximum = 1 }
      passes(0.5, sch)
      assert.equal("$: must be > 0, got 0", error_of(0, sch))
      assert.equal("$: must be < 1, got 1", error_of(1, sch))
    end)

    it("compares integers and floats exactly", function()
      passes(math.maxinteger, { maximum = math.maxinteger })
      assert.equal("$: must be <= 0.1, got 0.10000000000000002", error_of(0.1 + 1e-17 * 2, { maximum = 0.1 }))
    end)

    it("checks multipleOf for integers and floats", function()
      passes(12, { multipleOf = 3 })
      passes(-12, { multipleOf = 3 })
      passes(0, { multipleOf = 3 })
      passes(0.3, { multipleOf = 0.1 })
      passes(7.5, { multipleOf = 2.5 })
      passes(6.0, { multipleOf = 3 })
      assert.equal("$: must be a multiple of 3, got 10", error_of(10, { multipleOf = 3 }))
      assert.equal("$: must be a multiple of 0.1, got 0.35", error_of(0.35, { multipleOf = 0.1 }))
      assert.equal("$: must be a multiple of 1, got 1e-10", error_of(1e-10, { multipleOf = 1 }))
    end)

    it("does not apply number keywords to other types", function()
      passes("5", { minimum = 10, multipleOf = 3 })
    end)
  end)

  describe("enum and const", function()
    it("accepts only the listed values, with 1 equal to 1.0", function()
      local sch = { enum = { "red", "green", 3, true } }
      passes("red", sch)
      passes(3.0, sch)
      passes(true, sch)
      assert.equal('$: must be one of "red", "green", 3, true', error_of("blue", sch))
      assert.equal('$: must be one of "red", "green", 3, true', error_of("3", sch))
    end)

    it("compares tables deeply", function()
      local sch = { enum = { { a = 1, b = { 1, 2 } }, { 1, 2 } } }
      passes({ b = { 1, 2 }, a = 1.0 }, sch)
      passes({ 1, 2 }, sch)
      assert.equal('$: must be one of {"a": 1, "b": [1, 2]}, [1, 2]', error_of({ a = 1, b = { 2, 1 } }, sch))
      assert.equal('$: must be one of {"a": 1, "b": [1, 2]}, [1, 2]', error_of({ 1, 2, 3 }, sch))
    end)

    it("shortens a long list of choices", function()
      local list = {}
      for i = 1, 15 do list[i] = i end
      assert.equal("$: must be one of 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (5 more)", error_of(99, { enum = list }))
    end)

    it("accepts only the const value", function()
      passes("v1", { const = "v1" })
      passes({ x = { 1 } }, { const = { x = { 1 } } })
      passes(false, { const = false })
      assert.equal('$: must be "v1"', error_of("v2", { const = "v1" }))
      assert.equal("$: must be false", error_of(true, { const = false }))
      assert.equal('$: must be {"x": [1]}', error_of({ x = { 2 } }, { const = { x = { 1 } } }))
    end)
  end)

  describe("combinators", function()
    it("anyOf: passes when one alternative matches, else shows each alternative's first error", function()
      local sch = { anyOf = { { type = "string" }, { type = "number", minimum = 5 } } }
      passes("a", sch)
      passes(7, sch)
      assert.equal("$: does not match any of the 2 allowed schemas (anyOf): "
        .. "1) expected string, got number; 2) must be >= 5, got 1", error_of(1, sch))
    end)

    it("anyOf: keeps deeper paths in alternatives' errors", function()
      local sch = { properties = { p = { anyOf = {
        { type = "object", properties = { x = { type = "string" } } }, { type = "string" } } } } }
      assert.equal("$.p: does not match any of the 2 allowed schemas (anyOf): "
        .. "1) $.p.x: expected string, got number; 2) expected string, got object",
        error_of({ p = { x = 1 } }, sch))
    end)

    it("anyOf: cuts long alternative errors and lists at most five", function()
      local long = {}
      for i = 1, 10 do long[i] = string.rep(string.char(96 + i), 30) end
      local alts = { { enum = long } }
      for i = 2, 7 do alts[i] = { type = "number", minimum = i } end
      local e = error_of("x", { anyOf = alts })
      assert.matches('^%$: does not match any of the 7 allowed schemas %(anyOf%): 1%) must be one of "a+", ', e)
      assert.matches('%.%.%.; 2%) expected number, got string; 3%)', e)
      assert.matches("; 5%) expected number, got string; %.%.%.$", e)
      assert.is_true(#e < 400, #e .. " bytes")
    end)

    it("oneOf: needs exactly one match", function()
      local sch = { oneOf = { { type = "integer" }, { type = "number", minimum = 10 } } }
      passes(3, sch)
      passes(10.5, sch)
      assert.equal("$: matches more than one of the 2 schemas in oneOf (options 1 and 2), "
        .. "but must match exactly one", error_of(12, sch))
      assert.equal("$: does not match any of the 2 schemas in oneOf: "
        .. "1) expected integer, got 2.5; 2) must be >= 10, got 2.5", error_of(2.5, sch))
    end)

    it("allOf: reports the errors of every schema", function()
      local sch = { allOf = { { type = "object", required = { "a" } }, { required = { "b" } } } }
      passes({ a = 1, b = 2 }, sch)
      assert.same({ '$: missing required property "a"', '$: missing required property "b"' },
        errors_of({}, sch))
    end)

    it("not: refuses values that match", function()
      local sch = { ["not"] = { type = "string" } }
      passes(1, sch)
      assert.equal('$: must not match the schema in "not"', error_of("s", sch))
    end)

    it("boolean schemas: true accepts everything, false nothing", function()
      passes({ any = "thing" }, true)
      passes(1, { properties = { a = true } })
      assert.equal("$: no value is allowed here", error_of(1, false))
      assert.equal("$[0]: no value is allowed here", error_of({ 1 }, { items = false }))
      passes({}, { items = false })
    end)
  end)

  describe("ignored keywords", function()
    it("ignores default, description, title, examples and keywords it does not know", function()
      passes(5, { type = "integer", default = "x", description = "d", title = "t",
                  examples = { 1 }, ["$schema"] = "https://json-schema.org/draft/2020-12/schema",
                  ["$ref"] = "#/defs/x", nullable = true, prefixItems = { { type = "string" } } })
    end)

    it("does not fill in defaults or coerce", function()
      local v = { n = "5" }
      assert.equal("$.n: expected integer, got string",
        error_of(v, { properties = { n = { type = "integer", default = 1 } } }))
      assert.same({ n = "5" }, v)
    end)
  end)

  describe("many errors", function()
    it("collects all errors in a stable order: required, properties sorted by name, extras", function()
      local sch = {
        type = "object", required = { "id", "name" }, additionalProperties = false,
        properties = {
          id = { type = "integer" },
          tags = { type = "array", items = { type = "string" } },
          b = { type = "string" }, a = { type = "string" }, name = { type = "string" },
        },
      }
      local errs = errors_of({ a = 1, b = 2, tags = { "x", 1, "y", false }, zz = 1, yy = 2 }, sch)
      assert.same({
        '$: missing required property "id"',
        '$: missing required property "name"',
        "$.a: expected string, got number",
        "$.b: expected string, got number",
        "$.tags[1]: expected string, got number",
        "$.tags[3]: expected string, got boolean",
        '$.yy: is not an allowed property (allowed: "a", "b", "id", "name", "tags")',
        '$.zz: is not an allowed property (allowed: "a", "b", "id", "name", "tags")',
      }, errs)
      assert.is_nil(errs.truncated)
    end)

    it("reports unknown properties sorted by name", function()
      local v, want = {}, {}
      for i = 1, 12 do v[string.format("x%02d", 13 - i)] = i end
      for i = 1, 12 do want[i] = string.format("$.x%02d: is not an allowed property (no properties are allowed)", i) end
      assert.same(want, errors_of(v, { additionalProperties = false }))
    end)

    it("reports several failed keywords of one value", function()
      local errs = errors_of(15, { type = "integer", maximum = 10, multipleOf = 2, enum = { 1, 2 } })
      assert.same({ "$: must be one of 1, 2", "$: must be <= 10, got 15", "$: must be a multiple of 2, got 15" }, errs)
    end)

    it("stops at 20 errors and marks the list truncated", function()
      local v = {}
      for i = 1, 25 do v[i] = i end
      local errs = errors_of(v, { items = { type = "string" } })
      assert.equal(20, #errs)
      assert.equal("$[19]: expected string, got number", errs[20])
      assert.is_true(errs.truncated)
      local exact = {}
      for i = 1, 20 do exact[i] = i end
      errs = errors_of(exact, { items = { type = "string" } })
      assert.equal(20, #errs)
      assert.is_nil(errs.truncated)
    end)
  end)

  describe("guards", function()
    local tree = { type = "array" }
    tree.items = tree              -- a schema that recurses through items

    it("validates recursive schemas on nested values up to 64 levels", function()
      passes(nest(64), tree)
      local e = error_of(nest(65), tree)
      assert.equal("$" .. string.rep("[0]", 65) .. ": is nested deeper than 64 levels", e)
    end)

    it("stops schemas applied more than 256 levels deep on one path", function()
      local top = { type = "array" }
      local cur = top
      for _ = 1, 100 do               -- 100 allOf levels per array level
        local inner = {}
        cur.allOf = { inner }
        cur = inner
      end
      cur.items = top
      passes(nest(1), top)
      assert.equal("$[0][0]: schemas are applied more than 256 levels deep here", error_of(nest(3), top))
    end)

    it("reports a table that contains itself instead of looping", function()
      local t = {}
      t[1] = t
      assert.equal("$[0]: is a table that contains itself (a reference cycle)", error_of(t, tree))
      local node = { type = "object" }
      node.properties = { child = node, list = { type = "array", items = node } }
      local a, b = {}, {}
      a.child, b.list = b, { a }
      assert.equal("$.child.list[0]: is a table that contains itself (a reference cycle)", error_of(a, node))
    end)

    it("accepts one table reached twice when it does not contain itself", function()
      local shared = { 1 }
      passes({ shared, shared }, { type = "array", items = { type = "array", items = { type = "integer" } } })
    end)

    it("compares self-containing tables as unequal for enum, const and uniqueItems", function()
      local t = {}
      t.me = t
      local u = {}
      u.me = u
      assert.equal('$: must be {"me": {"me": {...}}}', error_of(t, { const = u }))
      assert.equal('$: must be one of {"me": {"me": {...}}}', error_of(t, { enum = { t } }))
      assert.equal("$: item [0] cannot be compared: it contains itself or nests too deeply",
        error_of({ t, t }, { uniqueItems = true }))
    end)

    it("does not blow up on a huge array: errors stop at 20", function()
      local big = {}
      for i = 1, 200000 do big[i] = i end
      local t0 = os.clock()
      local errs = errors_of(big, { type = "array", uniqueItems = true, items = { type = "string" } })
      assert.equal(20, #errs)
      assert.is_true(errs.truncated)
      passes(big, { type = "array", uniqueItems = true, items = { type = "integer", minimum = 1 } })
      -- linear work: a quadratic uniqueItems or unbounded error list would take minutes
      assert.is_true(os.clock() - t0 < 10, "took " .. (os.clock() - t0) .. " s")
    end)

    it("does not blow up on a huge array of objects with a duplicate at the end", function()
      local big = {}
      for i = 1, 50000 do big[i] = { id = i, tags = { "a" } } end
      big[50001] = { tags = { "a" }, id = 17 }
      local t0 = os.clock()
      local e = error_of(big, { uniqueItems = true, items = { required = { "id" } } })
      assert.equal("$: items must be unique, but [16] and [50000] are equal", e)
      assert.is_true(os.clock() - t0 < 10, "took " .. (os.clock() - t0) .. " s")
    end)

    it("does not blow up on a huge object with additionalProperties false", function()
      local big = {}
      for i = 1, 50000 do big["k" .. i] = i end
      local errs = errors_of(big, { type = "object", additionalProperties = false })
      assert.equal(20, #errs)
      assert.is_true(errs.truncated)
      assert.matches("^%$%.k%d+: is not an allowed property", errs[1])
    end)
  end)

  describe("schemas", function()
    it("raises on a schema that check refuses", function()
      assert.has_error(function() schema.validate(1, { type = "strng" }) end,
        'schema.validate: invalid schema: schema.type: unknown type "strng" '
        .. "(known types: object, array, string, number, integer, boolean, null)")
      assert.has_error(function() schema.validate(1, nil) end,
        "schema.validate: invalid schema: schema: expected a schema (a table or boolean), got nil")
    end)

    it("uses one schema for many values", function()
      local sch = { type = "object", properties = { a = { type = "string" } } }
      passes({ a = "x" }, sch)
      assert.equal("$.a: expected string, got number", error_of({ a = 1 }, sch))
      passes({ a = "y" }, sch)
    end)
  end)
end)

describe("schema.check", function()
  local function refuses(sch, msg)
    local ok, err = schema.check(sch)
    assert.is_false(ok)
    assert.equal(msg, err)
  end

  it("accepts a typical tool schema, boolean schemas and recursive schemas", function()
    assert.is_true(schema.check({
      type = "object",
      description = "search the web",
      required = { "query" },
      additionalProperties = false,
      properties = {
        query = { type = "string", minLength = 1, maxLength = 400, description = "what to look for" },
        limit = { type = "integer", minimum = 1, maximum = 50, default = 10 },
        site = { type = { "string", "null" }, pattern = "^[a-z.]+$", format = "hostname" },
        filters = { type = "array", uniqueItems = true, items = { enum = { "news", "images" } } },
        range = { oneOf = { { const = "any" }, { type = "object", properties = { from = { type = "string" } } } } },
        anything = true,
        nothing = { ["not"] = {} },
      },
    }))
    assert.is_true(schema.check(true))
    assert.is_true(schema.check(false))
    assert.is_true(schema.check({}))
    local node = { type = "object" }
    node.properties = { children = { type = "array", items = node } }
    assert.is_true(schema.check(node))
  end)

  it("refuses values that are not schemas", function()
    refuses("object", "schema: expected a schema (a table or boolean), got string")
    refuses({ { type = "string" } }, "schema: expected a schema (keywords with string keys), got a table with key 1")
    refuses({ properties = { a = "string" } }, "schema.properties.a: expected a schema (a table or boolean), got string")
  end)

  it("refuses unknown types", function()
    refuses({ type = "strng" },
      'schema.type: unknown type "strng" (known types: object, array, string, number, integer, boolean, null)')
    refuses({ properties = { x = { type = { "string", "float" } } } },
      'schema.properties.x.type[1]: unknown type "float" (known types: object, array, string, number, integer, boolean, null)')
    refuses({ type = {} }, "schema.type: must be a type name or a non-empty list of type names")
    refuses({ type = 5 }, "schema.type: must be a type name or a non-empty list of type names")
  end)

  it("refuses malformed properties, required and additionalProperties", function()
    refuses({ properties = { "a", "b" } }, "schema.properties: must be a table of schemas keyed by property name")
    refuses({ required = "name" }, "schema.required: must be a list of property names")
    refuses({ required = { "a", 2 } }, "schema.required[1]: expected a property name (string), got 2")
    refuses({ additionalProperties = "no" }, "schema.additionalProperties: expected a schema (a table or boolean), got string")
    refuses({ required = { "a", "b" }, properties = { a = {} }, additionalProperties = false },
      'schema.required[1]: "b" is required but not in properties, and additionalProperties is false, so no object can match')
  end)

  it("refuses tuple items and malformed enums", function()
    refuses({ items = { { type = "string" }, { type = "number" } } },
      "schema.items: a list of schemas (tuple form) is not supported; give one schema")
    refuses({ items = 3 }, "schema.items: expected a schema (a table or boolean), got number")
    refuses({ enum = {} }, "schema.enum: must be a non-empty list of values")
    refuses({ enum = "a" }, "schema.enum: must be a non-empty list of values")
  end)

  it("refuses malformed numeric keywords and contradictory ranges", function()
    refuses({ minimum = "1" }, "schema.minimum: must be a number, got string")
    refuses({ exclusiveMaximum = true }, "schema.exclusiveMaximum: must be a number (the draft-4 boolean form is not supported)")
    refuses({ multipleOf = 0 }, "schema.multipleOf: must be a number greater than 0")
    refuses({ minLength = -1 }, "schema.minLength: must be a whole number >= 0")
    refuses({ maxItems = 1.5 }, "schema.maxItems: must be a whole number >= 0")
    refuses({ maxProperties = math.huge }, "schema.maxProperties: must be a whole number >= 0")
    refuses({ minLength = 5, maxLength = 3 }, "schema: minLength (5) is greater than maxLength (3), so no value can match")
    refuses({ minimum = 2, maximum = 1.5 }, "schema: minimum (2) is greater than maximum (1.5), so no value can match")
    refuses({ uniqueItems = "yes" }, "schema.uniqueItems: must be true or false")
    refuses({ pattern = 5 }, "schema.pattern: must be a string")
  end)

  it("refuses malformed combinators, naming the nested field", function()
    refuses({ anyOf = {} }, "schema.anyOf: must be a non-empty list of schemas")
    refuses({ oneOf = { type = "string" } }, "schema.oneOf: must be a non-empty list of schemas")
    refuses({ allOf = { {}, { type = "nope" } } },
      'schema.allOf[1].type: unknown type "nope" (known types: object, array, string, number, integer, boolean, null)')
    refuses({ ["not"] = 1 }, "schema.not: expected a schema (a table or boolean), got number")
    refuses({ properties = { ["a b"] = { items = { minItems = -1 } } } },
      'schema.properties["a b"].items.minItems: must be a whole number >= 0')
  end)

  it("refuses schemas that loop through combinators alone", function()
    local a = {}
    a.anyOf = { { type = "string" }, a }
    refuses(a, "schema.anyOf[1]: loops back to schema through allOf/anyOf/oneOf/not alone, which would never end")
    local x, y = {}, {}
    x.properties = { p = y }        -- reached first through a property ...
    x.allOf = { y }
    y["not"] = x                    -- ... but x -> y -> x needs no property
    local ok, err = schema.check(x)
    assert.is_false(ok)
    assert.matches("loops back to", err, 1, true)
    assert.has_error(function() schema.validate(1, a) end)
  end)

  it("refuses schemas nested deeper than 128 levels", function()
    local deep = {}
    local cur = deep
    for _ = 1, 200 do
      local inner = {}
      cur.items = inner
      cur = inner
    end
    local ok, err = schema.check(deep)
    assert.is_false(ok)
    assert.equal("schema" .. string.rep(".items", 129) .. ": schema is nested deeper than 128 levels", err)
  end)
end)

describe("schema.describe_errors", function()
  it("lists the errors under a heading, one per line", function()
    local _, errs = schema.validate({ a = 1 }, { required = { "b" }, properties = { a = { type = "string" } } })
    assert.equal('invalid arguments (2 errors):\n- $: missing required property "b"\n'
      .. "- $.a: expected string, got number", schema.describe_errors(errs))
    assert.equal("invalid arguments (1 error):\n- $: expected string, got number",
      schema.describe_errors(select(2, schema.validate(1, { type = "string" }))))
  end)

  it("says when errors were left out", function()
    local v = {}
    for i = 1, 30 do v[i] = i end
    local text = schema.describe_errors(select(2, schema.validate(v, { items = { type = "string" } })))
    assert.matches("^invalid arguments %(20 errors, more not shown%):\n", text)
    local _, lines = text:gsub("\n", "")
    assert.equal(20, lines)
  end)

  it("copes with no errors", function()
    assert.equal("no errors", schema.describe_errors({}))
    assert.equal("no errors", schema.describe_errors(nil))
  end)
end)
