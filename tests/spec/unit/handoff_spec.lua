-- Unit specs for stdlib/handoff.lua (pure Lua, no host): verdict lines as
-- models write them, JSON found in answers, markdown sections, prompts, and
-- the record a pipeline keeps (gates, check, finish).
local root = os.getenv("MOONHIVE_ROOT") or "."
package.path = root .. "/stdlib/?.lua;" .. package.path
local handoff = require "handoff"

describe("handoff", function()
  describe("verdict", function()
    it("reads the last verdict line and its detail", function()
      assert.same({ "PASSED" }, { handoff.verdict("## Results\nall good\nVERDICT: PASSED") })
      assert.same({ "FAILED", "AC2, AC3" }, { handoff.verdict("VERDICT: FAILED — AC2, AC3\n") })
      assert.same({ "FAILED", "V1" }, { handoff.verdict("VERDICT: FAILED - V1") })
      assert.same({ "CHANGES_REQUESTED" }, { handoff.verdict("**VERDICT: CHANGES_REQUESTED**") })
      assert.same({ "APPROVED" }, { handoff.verdict("> **Verdict:** approved") })
      assert.same({ "DEGRADED", "/health slow" }, { handoff.verdict("  VERDICT: DEGRADED — /health slow  \n\nThanks.") })
      -- the last one counts: a quoted earlier verdict does not
      assert.same({ "APPROVED" }, { handoff.verdict("VERDICT: CHANGES_REQUESTED\nfixed.\nVERDICT: APPROVED") })
      assert.same({ "FAILED", "test_login fails" }, { handoff.verdict("VERDICT: FAILED: test_login fails") })
    end)

    it("finds none where there is none", function()
      assert.is_nil(handoff.verdict("no verdict here"))
      assert.is_nil(handoff.verdict("the reviewer said VERDICT: APPROVED in passing")) -- not at a line's start
      assert.is_nil(handoff.verdict(nil))
      assert.is_nil(handoff.verdict({}))
    end)
  end)

  describe("json", function()
    it("takes a fenced block, the whole text or the outermost braces", function()
      assert.same({ steps = { 1 } }, handoff.json('## Plan\n```json\n{"steps": [1]}\n```\nDone.'))
      assert.same({ a = 1 }, handoff.json('  {"a": 1} '))
      assert.same({ tasks = {} }, handoff.json('Here: {"tasks": []} as asked.'))
      assert.same({ 1, 2 }, handoff.json("```\n[1, 2]\n```"))
    end)

    it("skips values of the wrong shape and says why it found nothing", function()
      local text = '```json\n{"note": 1}\n```\n```json\n{"steps": [{"id": "S1"}]}\n```'
      local has_steps = function(v) return type(v) == "table" and type(v.steps) == "table" end
      assert.same({ steps = { { id = "S1" } } }, handoff.json(text, has_steps))
      assert.same({ nil, "the JSON in the text does not have the expected shape" },
                  { handoff.json('{"note": 1}', has_steps) })
      assert.same({ nil, "the text holds no JSON" }, { handoff.json("```json\n{broken\n```") })
      assert.same({ nil, "no text to read JSON from" }, { handoff.json(nil) })
    end)
  end)

  it("section: the body under a heading, up to the next one of its level", function()
    local text = "# Doc\n## Findings\n- a\n### Detail\nd\n## Handoff for coder\n1. do it\n\n## Sources\n[1] x"
    assert.equals("- a\n### Detail\nd", handoff.section(text, "Findings"))
    assert.equals("1. do it", handoff.section(text, "handoff for coder"))
    assert.equals("d", handoff.section(text, "Detail"))
    assert.is_nil(handoff.section(text, "Missing"))
    assert.is_nil(handoff.section("## Empty\n\n## Next\nx", "Empty"))
  end)

  it("prompt: the intro, then the parts that have something to say", function()
    local p = handoff.prompt("Do it.", { { "Task", "T1" }, { "Empty", "  " }, { "Nothing", nil },
                                         { "Criteria", { "AC1", "", "AC2" } }, { "None", {} } })
    assert.equals("Do it.\n\n## Task\nT1\n\n## Criteria\nAC1\nAC2", p)
  end)

  it("list: strings and numbers of a list, or one string", function()
    assert.same({ "a", "2" }, handoff.list({ "a", 2, {}, true }))
    assert.same({ "x" }, handoff.list("x"))
    assert.same({}, handoff.list("  "))
    assert.same({}, handoff.list(nil))
  end)

  describe("the record", function()
    it("keeps artifacts and the latest verdict of each gate, in steps order", function()
      local rec = handoff.record("p", { rounds = 0 })
      assert.same({ pipeline = "p", status = "running", ok = false, steps = {}, artifacts = {}, rounds = 0 }, rec)
      handoff.keep(rec, "code", "c1")
      assert.same({ false, "CHANGES_REQUESTED", "1" }, { handoff.gate(rec, "review", "VERDICT: CHANGES_REQUESTED — 1", { "APPROVED" }) })
      assert.same({ true, "APPROVED" }, { handoff.gate(rec, "review", "VERDICT: APPROVED", { "APPROVED" }) })
      assert.same({ false, "NONE" }, { handoff.gate(rec, "qa", "no line", { "PASSED" }) })
      assert.same({ { name = "code" }, { name = "review", verdict = "CHANGES_REQUESTED" },
                    { name = "review", verdict = "APPROVED" }, { name = "qa", verdict = "NONE" } }, rec.steps)
      assert.same({ review = "APPROVED", qa = "NONE" }, rec.verdicts)
      assert.same({ code = "c1", review = "VERDICT: APPROVED", qa = "no line" }, rec.artifacts)
    end)

    it("check stops unless the gate passes; finish sets ok only on success", function()
      local rec = handoff.record("p")
      assert.is_nil(handoff.check(rec, "deploy", "VERDICT: DEPLOYED", { "DEPLOYED" }))
      local stopped = handoff.check(rec, "monitoring", "VERDICT: DEGRADED — /a", { "HEALTHY" }, { DEGRADED = "degraded" })
      assert.equals(rec, stopped)
      assert.same({ "degraded", false, "monitoring", "the monitoring verdict was DEGRADED: /a" },
                  { rec.status, rec.ok, rec.stopped_at, rec.reason })
      rec = handoff.record("p")
      handoff.check(rec, "validation", "looks fine to me", { "PASSED" })
      assert.same({ "failed", "the validation answer had no VERDICT line" }, { rec.status, rec.reason })
      assert.same({ "succeeded", true }, { handoff.finish(rec, "succeeded").status, rec.ok })
    end)
  end)
end)
