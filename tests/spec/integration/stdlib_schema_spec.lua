-- stdlib/schema.lua inside the real sandbox: it loads with `require` and
-- works with only what a script may use (no io, os, debug or package), and a
-- self-containing value fails cleanly there too. The keywords themselves are
-- covered by tests/spec/unit/schema_spec.lua.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")

describe("stdlib schema in the sandbox", function()
  lazy_teardown(function() H.cleanup() end)

  it("checks a tool schema and validates arguments", function()
    local out = H.ok(H.run_script([[
      local schema = require "schema"
      local params = { type = "object", required = { "q" }, additionalProperties = false,
        properties = { q = { type = "string", maxLength = 3 },
                       tags = { type = "array", uniqueItems = true, items = { enum = { "a", "b" } } } } }
      print(schema.check(params))
      print(schema.validate({ q = "héé", tags = { "a", "b" } }, params))
      local ok, errs = schema.validate({ q = "long", tags = { "a", "a", "c" }, ["x\n"] = 1 }, params)
      print(ok)
      print(schema.describe_errors(errs))
      local t = {}
      t[1] = t
      local tree = { type = "array" }
      tree.items = tree
      print(select(2, schema.validate(t, tree))[1])
      print(schema.check({ type = "strng" }))
    ]]))
    assert.equals(table.concat({
      "true",
      "true",
      "false",
      "invalid arguments (4 errors):",
      "- $.q: must be at most 3 characters long, got 4",
      "- $.tags: items must be unique, but [0] and [1] are equal",
      "- $.tags[2]: must be one of \"a\", \"b\"",
      "- $[\"x\\n\"]: is not an allowed property (allowed: \"q\", \"tags\")",
      "$[0]: is a table that contains itself (a reference cycle)",
      "false\tschema.type: unknown type \"strng\" (known types: object, array, string, number, integer, boolean, null)",
      "",
    }, "\n"), out)
  end)
end)
