-- tools/remember — the model keeps a note in the agent's long-term memory.
return tool{
  name = "remember",
  description = "Save a short note (a fact, a decision, a preference) to your long-term memory for later tasks.",
  params = {
    type = "object",
    properties = { text = { type = "string", minLength = 1, maxLength = 4000 } },
    required = { "text" },
  },
  timeout = 5000,
  run = function(args, ctx)
    return { id = ctx:remember(args.text, { kind = "note" }) }
  end,
}
