-- handoff — reading what one role hands on to the next, and keeping the
-- record of a pipeline: the helpers of the ready-made workflows in
-- workflows/, for any workflow that chains the roles of agents/.
--
--   handoff.verdict(text) -> WORD, detail | nil    the last "VERDICT: WORD — detail" line
--   handoff.json(text [, accept]) -> value | nil, message
--                                 the first JSON value in text (a ```json block,
--                                 the whole text, or its outermost {...}) for
--                                 which accept(value) is true
--   handoff.section(text, heading) -> body | nil   the body under "## heading"
--   handoff.prompt(intro, {{heading, body}, ...}) -> text   intro, then the parts
--                                 whose body is not empty, each as "## heading";
--                                 a body is text or a list of texts (one a line)
--   handoff.list(v) -> {strings}  a list of strings, or a string as a one-item list
--
-- The record a pipeline returns as its output (plain JSON values):
--   local rec = handoff.record("development", {rounds = 0})
--   handoff.keep(rec, "assembly", output)          an artifact without a verdict
--   local ok, word, detail = handoff.gate(rec, "review", output, {"APPROVED"})
--   local stop = handoff.check(rec, "qa", output, {"PASSED"}, {DEGRADED = "degraded"})
--   if stop then return stop end                   not passed: finished, stopped at "qa"
--   return handoff.finish(rec, "failed", "review", "why")   status "succeeded" sets ok
-- rec = {pipeline=, status=, ok=, stopped_at=, reason=, steps = {{name=, verdict=}, ...},
--        verdicts = {name = latest WORD} (once a gate ran), artifacts = {name = latest text}, ...}
-- Everything here is plain string work: deterministic, so safe between
-- workflow steps.

local json = require "json"

local M = {}

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function detail_of(rest)
  rest = trim(rest):gsub("^[%*_`]+", ""):gsub("[%*_`]+$", "")
  rest = trim(rest):gsub("^\u{2014}", ""):gsub("^%-+", ""):gsub("^:", "")
  rest = trim(rest)
  return rest ~= "" and rest or nil
end

-- A verdict line: "VERDICT: PASSED", "**VERDICT: FAILED — AC2**", "> Verdict: approved".
function M.verdict(text)
  if type(text) ~= "string" then return nil end
  local word, rest
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local w, r = line:match("^[%s%*_>#`]*[Vv][Ee][Rr][Dd][Ii][Cc][Tt]%s*[%*_]*:[%s%*_`]*([%a_]+)(.*)$")
    if w then word, rest = w:upper(), r end
  end
  if not word then return nil end
  return word, detail_of(rest)
end

-- Candidate JSON texts, in order: fenced blocks (```json or bare ```), the
-- whole text, the span from the first "{" to the last "}".
local function candidates(text)
  local out = {}
  for lang, body in text:gmatch("```([%w_]*)[^\n]*\n(.-)```") do
    if lang == "" or lang:lower() == "json" then out[#out + 1] = body end
  end
  out[#out + 1] = text
  local first, last = text:find("{", 1, true), nil
  for i = #text, 1, -1 do
    if text:byte(i) == 125 then last = i break end
  end
  if first and last and last > first then out[#out + 1] = text:sub(first, last) end
  return out
end

function M.json(text, accept)
  if type(text) ~= "string" then return nil, "no text to read JSON from" end
  local found = false
  for _, c in ipairs(candidates(text)) do
    local v = json.decode(trim(c))
    if v ~= nil then
      found = true
      if not accept or accept(v) then return v end
    end
  end
  if found then return nil, "the JSON in the text does not have the expected shape" end
  return nil, "the text holds no JSON"
end

-- The body under a markdown heading "## heading" (any level, case-insensitive),
-- up to the next heading of the same or a higher level.
function M.section(text, heading)
  if type(text) ~= "string" then return nil end
  local want = heading:lower()
  local body, level
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local hashes, title = line:match("^(#+)%s+(.-)%s*$")
    if body and hashes and #hashes <= level then break end
    if body then body[#body + 1] = line
    elseif hashes and title:lower() == want then body, level = {}, #hashes end
  end
  if not body then return nil end
  local s = trim(table.concat(body, "\n"))
  return s ~= "" and s or nil
end

function M.prompt(intro, parts)
  local out = { intro }
  for _, p in ipairs(parts or {}) do
    local heading, body = p[1], p[2]
    if type(body) == "table" then
      local items = {}
      for _, x in ipairs(body) do
        if type(x) == "string" and x:find("%S") then items[#items + 1] = trim(x) end
      end
      body = table.concat(items, "\n")
    end
    if type(body) == "string" and body:find("%S") then out[#out + 1] = "## " .. heading .. "\n" .. trim(body) end
  end
  return table.concat(out, "\n\n")
end

function M.list(v)
  if type(v) == "string" then return v:find("%S") and { v } or {} end
  local out = {}
  if type(v) == "table" then
    for _, x in ipairs(v) do
      if type(x) == "string" or type(x) == "number" then out[#out + 1] = tostring(x) end
    end
  end
  return out
end

-- ---- the record ----

function M.record(pipeline, fields)
  local rec = { pipeline = pipeline, status = "running", ok = false, steps = {}, artifacts = {} }
  for k, v in pairs(fields or {}) do rec[k] = v end
  return rec
end

function M.keep(rec, name, output)
  rec.artifacts[name] = output
  rec.steps[#rec.steps + 1] = { name = name }
end

-- Records a gate's output and verdict ("NONE" when it has no verdict line);
-- returns whether the verdict is one of `pass`, the verdict and its detail.
-- verdicts[name] is the latest.
function M.gate(rec, name, output, pass)
  local word, detail = M.verdict(output)
  word = word or "NONE"
  rec.artifacts[name] = output
  rec.verdicts = rec.verdicts or {}
  rec.verdicts[name] = word
  rec.steps[#rec.steps + 1] = { name = name, verdict = word }
  for _, p in ipairs(pass) do
    if word == p then return true, word, detail end
  end
  return false, word, detail
end

-- Why a gate stopped: "the review verdict was FAILED: AC2" or "... had no VERDICT line".
function M.why(name, word, detail)
  if word == "NONE" then return ("the %s answer had no VERDICT line"):format(name) end
  return ("the %s verdict was %s%s"):format(name, word, detail and (": " .. detail) or "")
end

-- A gate that ends the pipeline unless it passes: nil when the verdict is
-- one of `pass`, else the record finished with status others[verdict] or
-- "failed", stopped at `name`.
function M.check(rec, name, output, pass, others)
  local ok, word, detail = M.gate(rec, name, output, pass)
  if ok then return nil end
  return M.finish(rec, others and others[word] or "failed", name, M.why(name, word, detail))
end

function M.finish(rec, status, stopped_at, reason)
  rec.status = status
  rec.ok = status == "succeeded"
  rec.stopped_at = stopped_at
  rec.reason = reason
  return rec
end

return M
