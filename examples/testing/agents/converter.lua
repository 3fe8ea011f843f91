-- converter.lua — converts prices between currencies with a rate table of
-- its own and the built-in calculator. spec/converter_spec.lua tests it
-- with a scripted model (`moonhive test`, docs/testing.md).

local RATES = { EUR = { USD = 1.08, GBP = 0.85 }, USD = { EUR = 0.93 }, GBP = { EUR = 1.18 } }

local rate = tool{
  name = "rate",
  description = "How many units of `to` one unit of `from` buys.",
  params = {
    type = "object",
    properties = { from = { type = "string" }, to = { type = "string" } },
    required = { "from", "to" },
  },
  run = function(args)
    local r = RATES[args.from] and RATES[args.from][args.to]
    if not r then error(("unknown currency pair %s/%s"):format(args.from, args.to), 0) end
    return { rate = r }
  end,
}

return agent{
  name = "converter",
  system = "You convert prices. Look the rate up with `rate`, multiply with `calculator`, " ..
           "answer in one sentence.",
  tools = { rate, "calculator" },
  max_iterations = 5,
}
