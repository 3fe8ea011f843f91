-- moonhive.pricing — cost of a call from a price table (USD per million
-- tokens, input and output). Unknown models cost 0 and say so in the result
-- (cost is nil then). The table can be extended with pricing.set().

local _M = {}

local prices = {
  ["openai/gpt-4o-mini"] = { 0.15, 0.60 },
  ["openai/gpt-4o"] = { 2.50, 10.00 },
  ["openai/gpt-4.1"] = { 2.00, 8.00 },
  ["openai/gpt-4.1-mini"] = { 0.40, 1.60 },
  ["openai/gpt-4.1-nano"] = { 0.10, 0.40 },
  ["openai/text-embedding-3-small"] = { 0.02, 0 },
  ["anthropic/claude-3-5-haiku-latest"] = { 0.80, 4.00 },
  ["anthropic/claude-3-5-sonnet-latest"] = { 3.00, 15.00 },
  ["anthropic/claude-sonnet-4-0"] = { 3.00, 15.00 },
  ["anthropic/claude-opus-4-0"] = { 15.00, 75.00 },
}

function _M.set(name, input_per_million, output_per_million)
  prices[name] = { input_per_million, output_per_million }
end

function _M.cost(provider, model, usage)
  if provider == "mock" then return 0 end
  local p = prices[provider .. "/" .. model]
  if not p or not usage then return nil end
  return ((usage.input or 0) * p[1] + (usage.output or 0) * p[2]) / 1e6
end

return _M
