-- tools/memory_search — the model searches the agent's long-term memory
-- (relevance by bm25, newer first among equals).
return tool{
  name = "memory_search",
  description = "Search your long-term memory (notes and past tasks) for what is relevant to a query.",
  params = {
    type = "object",
    properties = {
      query = { type = "string", minLength = 1, maxLength = 1000 },
      k = { type = "integer", minimum = 1, maximum = 20 },
    },
    required = { "query" },
  },
  timeout = 5000,
  run = function(args, ctx)
    local found = {}
    for i, m in ipairs(ctx:recall(args.query, { k = args.k or 5 })) do
      found[i] = { text = m.text, kind = m.kind, when = os.date("!%Y-%m-%d", math.floor(m.created_at)) }
    end
    return found
  end,
}
