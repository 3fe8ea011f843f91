-- trip.lua — plans a trip budget: asks the converter agent for the hotel's
-- price in dollars, then has the model write a one-line note.

return agent{
  name = "trip",
  system = "You write short travel budgets.",
  run = function(self, input, ctx)
    local hotel = ctx:ask("converter", "Convert to USD: " .. input)
    local res = ctx:chat{ tools = false,
                          messages = { { role = "user", content = "One-line budget note. Hotel: " .. hotel } } }
    return res.content
  end,
}
