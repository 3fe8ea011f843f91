-- moonhive.memory — episodic and long-term memory for agents, persisted in
-- SQLite (table memories, full-text index memories_fts) per agent and
-- namespace.
--
-- Search ranks by relevance (FTS5's bm25) blended with recency: newer
-- entries win among equally relevant ones. With `semantic = true` and a
-- model that offers embeddings (`embed_model`, default: the default model's
-- provider), entries are also embedded when remembered and searched by
-- cosine similarity (top k) — the answer says which method ranked it.
--
-- Bridge entries (host/mod_memory.c), each fn(request, emit, caller):
--   remember{agent=, namespace=, text=, kind=, metadata=, embed=} -> {id=}
--   search{agent=, namespace=, query=, k=, semantic=} -> {{id=, text=, kind=, score=, created_at=, metadata=}, ...}
--   recent{agent=, namespace=, k=} -> newest first
--   forget{agent=, namespace=, id=} -> {removed=}   (without id: the whole namespace)

local cjson = require "cjson"
local database = require "moonhive.db"

local _M = {}

local MAX_TEXT = 64 * 1024
local MAX_K = 100
local HALF_LIFE_DAYS = 30 -- recency: an entry this old counts half as much

local function scope(req, what)
  local agent = req.agent
  if type(agent) ~= "string" or agent == "" then return nil, what .. ": 'agent' must be a name" end
  local ns = req.namespace == nil and "default" or req.namespace
  if type(ns) ~= "string" or ns == "" then return nil, what .. ": 'namespace' must be a name" end
  return agent, ns
end

-- The scope and the database for an entry point: agent, namespace, db, or
-- nil and the message.
local function open(req, what)
  local agent, ns = scope(req, what)
  if not agent then return nil, ns end
  local db, err = database.get()
  if not db then return nil, what .. ": " .. err end
  return agent, ns, db
end

-- Best first (ties: newest first), at most k.
local function top_k(out, k)
  table.sort(out, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.id > b.id
  end)
  for i = #out, k + 1, -1 do out[i] = nil end
  return out
end

local function k_of(req)
  local k = math.floor(tonumber(req.k) or 5)
  return math.max(1, math.min(k, MAX_K))
end

local function embed(text, model)
  local llm = require "moonhive.llm"
  local res = llm.embed({ model = model, input = { text } })
  return res and res.vectors and res.vectors[1]
end

function _M.remember(req)
  local agent, ns, db = open(req, "memory.remember")
  if not agent then return nil, ns end
  if type(req.text) ~= "string" or req.text == "" then return nil, "memory.remember: 'text' must be a non-empty string" end
  if #req.text > MAX_TEXT then return nil, ("memory.remember: 'text' is longer than %d bytes"):format(MAX_TEXT) end
  local vector = req.embed and embed(req.text, req.embed_model)
  local ok, e = db:run([[INSERT INTO memories (agent, namespace, kind, text, metadata, embedding, created_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?)]],
                       agent, ns, type(req.kind) == "string" and req.kind or "note", req.text,
                       req.metadata ~= nil and cjson.encode(req.metadata) or nil,
                       vector and cjson.encode(vector) or nil, time.now())
  if not ok then return nil, "memory.remember: " .. e end
  return { id = ok.last_id }
end

local function row_out(r, score, method)
  return { id = r.id, text = r.text, kind = r.kind, created_at = r.created_at, score = score, method = method,
           metadata = r.metadata and cjson.decode(r.metadata) or nil }
end

-- FTS5 query text from free text: each word quoted, joined with OR, so
-- punctuation in a question is never FTS syntax.
local function fts_query(text)
  local words = {}
  for w in text:gmatch("[%w_]+") do
    if #words < 32 then words[#words + 1] = '"' .. w .. '"' end
  end
  return table.concat(words, " OR ")
end

local function recency(created_at, now)
  local days = math.max(0, now - (created_at or now)) / 86400
  return 0.5 ^ (days / HALF_LIFE_DAYS)
end

local function cosine(a, b)
  local dot, na, nb = 0, 0, 0
  for i = 1, math.min(#a, #b) do
    dot, na, nb = dot + a[i] * b[i], na + a[i] * a[i], nb + b[i] * b[i]
  end
  if na == 0 or nb == 0 then return 0 end
  return dot / math.sqrt(na * nb)
end

function _M.search(req)
  local agent, ns, db = open(req, "memory.search")
  if not agent then return nil, ns end
  if type(req.query) ~= "string" then return nil, "memory.search: 'query' must be a string" end
  local k, now, out = k_of(req), time.now(), {}
  if req.semantic then
    local q = embed(req.query, req.embed_model)
    if q then
      local rows = db:query([[SELECT * FROM memories WHERE agent = ? AND namespace = ? AND embedding IS NOT NULL
                              ORDER BY created_at DESC LIMIT 5000]], agent, ns) or {}
      for _, r in ipairs(rows) do
        out[#out + 1] = row_out(r, cosine(q, cjson.decode(r.embedding)), "cosine")
      end
      return top_k(out, k)
    end
  end
  local match = fts_query(req.query)
  if match == "" then return out end
  local rows, e = db:query([[SELECT m.*, bm25(memories_fts) AS rank FROM memories_fts
                             JOIN memories m ON m.id = memories_fts.rowid
                             WHERE memories_fts MATCH ? AND m.agent = ? AND m.namespace = ?
                             ORDER BY rank LIMIT ?]], match, agent, ns, k * 4)
  if not rows then return nil, "memory.search: " .. e end
  for _, r in ipairs(rows) do
    -- bm25 is lower for better matches; make it a positive relevance
    out[#out + 1] = row_out(r, -r.rank * recency(r.created_at, now), "bm25")
  end
  return top_k(out, k)
end

function _M.recent(req)
  local agent, ns, db = open(req, "memory.recent")
  if not agent then return nil, ns end
  local rows = db:query("SELECT * FROM memories WHERE agent = ? AND namespace = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                        agent, ns, k_of(req)) or {}
  local out = {}
  for i, r in ipairs(rows) do out[i] = row_out(r, nil, "recent") end
  return out
end

function _M.forget(req)
  local agent, ns, db = open(req, "memory.forget")
  if not agent then return nil, ns end
  local res, e
  if req.id ~= nil then
    res, e = db:run("DELETE FROM memories WHERE id = ? AND agent = ? AND namespace = ?", math.floor(tonumber(req.id) or -1), agent, ns)
  else
    res, e = db:run("DELETE FROM memories WHERE agent = ? AND namespace = ?", agent, ns)
  end
  if not res then return nil, "memory.forget: " .. e end
  return { removed = res.changes }
end

return _M
