-- Unit specs for stdlib/expr.lua (pure Lua, no host): literals, paths,
-- comparisons, logic and its precedence, contains and the functions,
-- templates, and malformed expressions reported as
-- "expression error at column N: ...", at compile and at evaluation.
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/stdlib/?.lua;" .. package.path
local expr = require "expr"

local ENV = {
  input = { task = "write a poem", level = 3, flag = false, list = { 10, 20, 30 }, tags = { "a", "b" },
            nested = { deep = { x = "y" } } },
  steps = { review = { output = "LGTM. APPROVED", status = "done", runs = 2 },
            score = { output = "8" }, skipped = { status = "skipped" } },
}

local function ev(text) return expr.eval(text, ENV) end

-- The compile error of text (asserts that there is one).
local function compile_error(text)
  local c, err = expr.compile(text)
  assert.is_nil(c, "expected a compile error for: " .. text)
  return err
end

-- The evaluation error of text (asserts that it compiles and then fails).
local function eval_error(text)
  local c = assert(expr.compile(text))
  local ok, err = pcall(c.eval, c, ENV)
  assert.is_false(ok, "expected an evaluation error for: " .. text)
  return err
end

describe("expr", function()
  it("reads literals", function()
    assert.equal("a \"q\" b\n", ev([["a \"q\" b\n"]]))
    assert.equal("it's", ev([['it\'s']]))
    assert.equal(12, ev("12"))
    assert.equal(3.5, ev("3.5"))
    assert.equal(1500.0, ev("1.5e3"))
    assert.is_true(ev("true"))
    assert.is_false(ev("false"))
    assert.is_nil(ev("nil"))
    assert.is_nil(ev("null"))
    assert.equal(-4, ev("-4"))
  end)

  it("reads dotted paths, indexes and missing fields as nil", function()
    assert.equal("write a poem", ev("input.task"))
    assert.equal("LGTM. APPROVED", ev("steps.review.output"))
    assert.equal(20, ev("input.list[2]"))
    assert.equal(30, ev("input.list.3"))
    assert.equal("y", ev("input.nested.deep.x"))
    assert.equal("y", ev('input.nested["deep"].x'))
    assert.is_nil(ev("input.missing.deeper.still"))
    assert.is_nil(ev("steps.review.output.x")) -- a field of a string
    assert.is_nil(ev("nothing"))
  end)

  it("compares values", function()
    assert.is_true(ev("input.level == 3"))
    assert.is_true(ev("input.level ~= 4"))
    assert.is_true(ev("input.level != 4"))
    assert.is_true(ev("input.level < 4 and input.level <= 3 and input.level > 2 and input.level >= 3"))
    assert.is_true(ev('"abc" < "abd"'))
    assert.is_false(ev('input.level == "3"'))
    assert.is_true(ev("input.missing == nil"))
    assert.is_true(ev("input.tags == input.tags"))
    assert.is_false(ev('steps.review.status == "skipped"'))
  end)

  it("does logic with Lua's truth and operands; not binds looser than a comparison", function()
    assert.is_true(ev("input.flag or input.level > 1"))
    assert.is_false(ev("input.flag and true"))
    assert.equal("fallback", ev('input.missing or "fallback"'))
    assert.equal(3, ev("input.task and input.level"))
    assert.is_true(ev("not input.flag"))
    assert.is_true(ev("!input.flag && input.level == 3 || false"))
    assert.is_false(ev('not steps.review.output contains "APPROVED"'))
    assert.is_true(ev('not steps.review.output contains "REJECTED"'))
    assert.is_true(ev("not (input.level == 1) and (input.level == 3 or false)"))
    assert.is_true(ev("false or true and true"))   -- and before or
    assert.is_false(ev("(false or true) and false"))
    assert.is_true(expr.truthy(ev("0"))) -- only nil and false are false
    assert.is_true(expr.truthy(ev('""')))
  end)

  it("tests containment in strings, lists and objects", function()
    assert.is_true(ev('steps.review.output contains "APPROVED"'))
    assert.is_true(ev('contains(steps.review.output, "APPROVED")'))
    assert.is_false(ev('steps.review.output contains "approved"'))
    assert.is_true(ev('steps.review.output contains "."')) -- plain text, not a pattern
    assert.is_true(ev("input.list contains 20"))
    assert.is_false(ev("input.list contains 25"))
    assert.is_true(ev('input.nested contains "deep"'))
    assert.is_false(ev('input.missing contains "x"'))
  end)

  it("has a few functions", function()
    assert.equal(3, ev("len(input.list)"))
    assert.equal(12, ev("len(input.task)"))
    assert.equal(0, ev("len(input.missing)"))
    assert.equal("lgtm. approved", ev("lower(steps.review.output)"))
    assert.equal("WRITE A POEM", ev("upper(input.task)"))
    assert.is_true(ev('starts_with(input.task, "write")'))
    assert.is_true(ev('ends_with(input.task, "poem")'))
    assert.is_false(ev('ends_with(input.task, "prose")'))
    assert.is_true(ev("number(steps.score.output) >= 7"))
    assert.is_nil(ev('number("many")'))
    assert.equal("[10,20,30]", ev("text(input.list)"))
    assert.equal("3", ev("text(input.level)"))
  end)

  it("lists the paths an expression reads", function()
    local c = assert(expr.compile('steps.review.output contains "x" and input.list[steps.a.runs] == len(memory.k)'))
    local seen = {}
    for _, p in ipairs(c.paths) do seen[#seen + 1] = p.root .. "." .. tostring(p.first) .. "@" .. p.col end
    table.sort(seen)
    assert.same({ "input.list@38", "memory.k@70", "steps.a@49", "steps.review@1" }, seen)
  end)

  describe("malformed expressions", function()
    local cases = {
      { "steps.review.output ==", 23, "expected a value, found the end of the expression" },
      { "(input.level == 1", 18, "expected ')' to close the '(' at column 1" },
      { "input.level == 1)", 17, "unexpected ')' after the expression" },
      { '"abc', 1, "unterminated string" },
      { '"a\\qb"', 3, "bad escape '\\q' in a string" },
      { "input.level @ 2", 13, "unexpected character '@'" },
      { "input.level = 2", 13, "'=' is not an operator (use '==' to compare)" },
      { "shout(input.task)", 1, "unknown function 'shout'" },
      { "len(input.task, 2)", 1, "len takes 1 argument, not 2" },
      { "len(input.task", 15, "expected ')' to close the call of len at column 1" },
      { "1 < 2 < 3", 7, "comparisons do not chain" },
      { "input.", 7, "expected a field name after '.'" },
      { "input.list[1", 13, "expected ']' to close the '[' at column 11" },
      { "", 1, "the expression is empty" },
      { "   ", 4, "the expression is empty" },
      { "== 1", 1, "expected a value, found '=='" },
      { "input.level and", 16, "expected a value, found the end of the expression" },
      { "12abc", 1, "malformed number" },
      { "input.task input.level", 12, "unexpected 'input' after the expression" },
    }
    for _, case in ipairs(cases) do
      it(("reports %q at column %d"):format(case[1], case[2]), function()
        local err = compile_error(case[1])
        assert.equal(("expression error at column %d: "):format(case[2]), err:sub(1, #("expression error at column %d: "):format(case[2])), err)
        assert.truthy(err:find(case[3], 1, true), err)
      end)
    end

    it("refuses nesting that is too deep, and expressions that are too long", function()
      assert.truthy(compile_error(("("):rep(200) .. "1" .. (")"):rep(200)):find("nested too deeply", 1, true))
      assert.truthy(compile_error(("a["):rep(200) .. "1" .. ("]"):rep(200)):find("nested too deeply", 1, true))
      assert.truthy(compile_error(("1 or "):rep(3000) .. "1"):find("longer than", 1, true))
      assert.equal("expression error at column 1: an expression must be a string", select(2, expr.compile(42)))
    end)

    it("reports type errors at evaluation with the operator's column", function()
      assert.equal("expression error at column 13: '<' compares two numbers or two strings, not a number and a string",
                   eval_error('input.level < "x"'))
      assert.equal("expression error at column 20: '>=' compares two numbers or two strings, not nil and a number",
                   eval_error("number(input.task) >= 7"))
      assert.equal("expression error at column 1: lower needs a string, not a number", eval_error("lower(input.level)"))
      assert.equal("expression error at column 1: '-' needs a number, not a string", eval_error("-input.task"))
      assert.equal("expression error at column 1: len needs a string or a table, not a boolean", eval_error("len(true)"))
    end)
  end)

  describe("templates", function()
    it("inserts values as text", function()
      local t = assert(expr.template("Task: {{input.task}} (level {{ input.level }}) {{input.list}}{{input.missing}}!"))
      assert.equal("Task: write a poem (level 3) [10,20,30]!", t:render(ENV))
    end)

    it("gives the value itself for a lone placeholder", function()
      assert.same({ 10, 20, 30 }, assert(expr.template("{{input.list}}")):render(ENV))
      assert.equal(3, assert(expr.template("{{ input.level }}")):render(ENV))
      assert.equal("plain text", assert(expr.template("plain text")):render(ENV))
      assert.equal("", assert(expr.template("")):render(ENV))
    end)

    it("evaluates whole expressions in placeholders", function()
      local t = assert(expr.template('{{steps.review.output contains "APPROVED" and "ship" or "fix"}} it'))
      assert.equal("ship it", t:render(ENV))
    end)

    it("reports errors at their column in the template", function()
      assert.equal("expression error at column 11: expected a value, found the end of the expression",
                   select(2, expr.template("a {{ x == }} b")))
      assert.equal("expression error at column 3: '{{' without its '}}'", select(2, expr.template("a {{ x")))
      assert.equal("expression error at column 9: unexpected character '#'", select(2, expr.template("ab {{ x #}}")))
    end)

    it("lists the paths of every placeholder", function()
      local t = assert(expr.template("{{input.a}} and {{steps.b.output}}"))
      assert.equal(2, #t.paths)
      assert.equal("b", t.paths[2].first)
      assert.equal(19, t.paths[2].col)
    end)
  end)
end)
