-- moonhive.cache — the opt-in response cache for model calls.
--
-- Key: SHA-256 of the canonical request (provider, model and everything that
-- shapes the answer). Value: the provider's result, stored as JSON in the
-- host's SQLite database ($MOONHIVE_DATA/moonhive.db, table llm_cache). A hit
-- needs no network at all.

local cjson = require "cjson"
local crypto = require "crypto"
local canonical = require "moonhive.canonical"
local database = require "moonhive.db"

local _M = {}

local open = database.get

-- The fields of a request that shape the answer.
local shaping = { "system", "messages", "tools", "tool_choice", "temperature", "max_tokens", "response_format",
                  "mock" }

function _M.key(provider, model, req)
  local subject = { provider = provider, model = model }
  for _, k in ipairs(shaping) do subject[k] = req[k] end
  return crypto.sha256(canonical.encode(subject))
end

function _M.get(key)
  local d = open()
  if not d then return nil end
  local row = d:first("SELECT response FROM llm_cache WHERE key = ?", key)
  if not row then return nil end
  local ok, v = pcall(cjson.decode, row.response)
  return ok and type(v) == "table" and v or nil
end

function _M.put(key, result)
  local d, err = open()
  if not d then
    log.warn("llm cache unavailable: " .. tostring(err))
    return
  end
  local ok, text = pcall(cjson.encode, result)
  if not ok then return end
  d:run("INSERT OR REPLACE INTO llm_cache (key, response, created_at) VALUES (?, ?, ?)",
        key, text, os.time())
end

return _M
