-- converter_spec.lua — the worked example of docs/testing.md. Run it with
--   cd examples/testing && moonhive test
local mh = require "moonhive.test"

describe("the converter agent", function()
  it("looks the rate up, multiplies, and answers", function()
    local model = mh.mock_model()
    model:tool_call("rate", { from = "EUR", to = "USD" })
    model:tool_call("calculator", { expression = "round(120 * 1.08, 2)" })
    model:reply("120 EUR is 129.6 USD.")

    local res = mh.run_agent("converter", "How much is 120 EUR in USD?", { model = model })

    assert.is_true(res.ok, res.error)
    assert.equals("120 EUR is 129.6 USD.", res.output)
    -- the tools really ran
    assert.same({ "rate", "calculator" }, res.tool_names())
    assert.same({ rate = 1.08 }, res.tool_calls[1].result)
    assert.same({ result = 129.6 }, res.tool_calls[2].result)
    -- what the model was sent: system prompt, the task, the tools, the results
    local first, last = model.requests[1], model.requests[3]
    assert.matches("You convert prices", first.system, 1, true)
    assert.equals("How much is 120 EUR in USD?", first.messages[1].content)
    assert.equals("rate", first.tools[1].name)
    assert.equals('{"result":129.6}', last.messages[#last.messages].content)
    assert.equals(0, model:remaining())
  end)

  it("lets the model see a tool's error and recover", function()
    local model = mh.mock_model()
    model:tool_call("rate", { from = "EUR", to = "JPY" })
    model:reply("I have no rate for JPY.")

    local res = mh.run_agent("converter", "120 EUR in JPY?", { model = model })

    assert.is_true(res.ok, res.error)
    assert.is_false(res.tool_calls[1].ok)
    assert.matches("unknown currency pair EUR/JPY", res.tool_calls[1].error, 1, true)
    local sent = model.requests[2].messages
    assert.matches("^error: .*EUR/JPY", sent[#sent].content)
    assert.equals("I have no rate for JPY.", res.output)
  end)

  it("fails clearly when the model call fails", function()
    local model = mh.mock_model()
    model:fail("rate limited")

    local res = mh.run_agent("converter", "120 EUR in USD?", { model = model })

    assert.is_false(res.ok)
    assert.matches("rate limited", res.error, 1, true)
  end)
end)

describe("the trip agent", function()
  it("asks the converter, then writes the note", function()
    local model = mh.mock_model()
    model:reply("The hotel is 216 USD.", { agent = "converter" })
    model:reply("Budget: 216 USD for the hotel.", { agent = "trip" })

    local res = mh.run_agent("trip", "hotel 200 EUR", { model = model })

    assert.is_true(res.ok, res.error)
    assert.equals("Budget: 216 USD for the hotel.", res.output)
    assert.equals("converter", model.requests[1].agent)
    assert.equals("Convert to USD: hotel 200 EUR", model.requests[1].messages[1].content)
    assert.matches("Hotel: The hotel is 216 USD.", model.requests[2].messages[1].content, 1, true)
  end)
end)

describe("the headline script", function()
  it("prints the model's headline in capitals", function()
    local model = mh.mock_model()
    model:reply("Moonhive ships a test fixture")

    local res = mh.run_script("scripts/headline.lua", { "moonhive", "now", "has", "tests" }, { model = model })

    assert.is_true(res.ok, res.error)
    assert.equals("MOONHIVE SHIPS A TEST FIXTURE\n", res.stdout)
    assert.equals("moonhive now has tests", model.requests[1].messages[1].content)
  end)
end)
