-- shop_assistant.lua — an agent to copy: a system prompt, a tool of its own and two
-- built-in ones. Run it with a task (offline, the mock model answers):
--   moonhive run examples/shop_assistant.lua "How many days are there in 3 weeks?"
-- With OPENAI_API_KEY or ANTHROPIC_API_KEY set, a real model does; the run
-- is recorded: `moonhive runs`, then `moonhive runs show ID`.

local unit_price = tool{
  name = "unit_price",
  description = "The price of one unit of a product, in dollars.",
  params = {
    type = "object",
    properties = { product = { type = "string", enum = { "apple", "pear", "plum" } } },
    required = { "product" },
  },
  run = function(args)
    local prices = { apple = 0.5, pear = 0.75, plum = 0.2 }
    return { product = args.product, usd = prices[args.product] }
  end,
}

return agent{
  name = "shop_assistant",
  description = "Answers questions about prices and quantities.",
  system = "You are a careful shop assistant. Use unit_price for prices and the calculator for arithmetic; " ..
           "never guess a number. Answer in one sentence.",
  tools = { unit_price, "calculator", "current_time" },
  max_iterations = 6,
}
