-- schema.lua — check values against a JSON Schema subset, for the arguments
-- of a model's tool call before the tool runs. Scripts use it as
-- `require "schema"`; it needs only base functions, string, table, math, utf8.
--
--   local schema = require "schema"
--   assert(schema.check(tool.parameters))          -- once, when the tool is defined
--   local ok, errors = schema.validate(args, tool.parameters)
--   if not ok then return schema.describe_errors(errors) end  -- back to the model
--
-- Errors read "<path>: <sentence>", the path in JSONPath form with arrays
-- counted from 0 as in the JSON the model wrote: `$.items[2].name: expected
-- string, got number`. At most 20 are collected (the list then has
-- `truncated = true`).
--
-- JSON in Lua: objects and arrays are both tables. A table is an array when
-- its keys are exactly 1..n, an object when every key is a string; an empty
-- table is both. `integer` is an integer or a float without a fraction. JSON
-- nulls never reach a script, so an absent property is simply absent and
-- `null` matches only nil.
--
-- Keywords: type, properties, required, additionalProperties, items (one
-- schema), enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum
-- (numbers), multipleOf, minLength, maxLength (UTF-8 characters), minItems,
-- maxItems, uniqueItems, minProperties, maxProperties, allOf, anyOf, oneOf,
-- not, and the boolean schemas true and false. `pattern` and `format` are
-- accepted and ignored (an ECMA regex cannot be run safely with Lua patterns);
-- other keywords ($ref, prefixItems, if/then/else, ...) are ignored, as JSON
-- Schema says of unknown keywords. Nothing is coerced or defaulted.
--
-- Bounds: values nested deeper than 64 levels and tables that contain
-- themselves are errors, never a hang; check() refuses schemas nested deeper
-- than 128 levels and schemas that loop through allOf/anyOf/oneOf/not. Work is
-- linear in the size of the value (sorting large key sets happens in Lua, so
-- the run's CPU budget still applies inside it).

local _M = {}

local type, next, ipairs, rawget, rawequal, tostring, tonumber, setmetatable, error =
  type, next, ipairs, rawget, rawequal, tostring, tonumber, setmetatable, error
local floor, abs, min, huge, mtype, tointeger =
  math.floor, math.abs, math.min, math.huge, math.type, math.tointeger
local format, sub, gsub, find, byte = string.format, string.sub, string.gsub, string.find, string.byte
local concat, sort = table.concat, table.sort
local ulen = utf8.len

local MAX_ERRORS = 20
local MAX_DEPTH = 64            -- nesting of the value being validated
local MAX_SCHEMA_DEPTH = 128    -- nesting of a schema (check)
local MAX_LEVEL = 256           -- schemas applied on one path (validate)
local SORT_IN_C = 4096          -- longer lists are sorted in Lua (see sort_list)

local TYPES = { object = true, array = true, string = true, number = true,
                integer = true, boolean = true, null = true }
local TYPE_LIST = "object, array, string, number, integer, boolean, null"

-- ---------------------------------------------------------------- helpers

-- Merge sort in Lua, for lists too long for one uninterruptible C call.
local function merge_sort(a)
  local n = #a
  local src, dst, width = a, {}, 1
  while width < n do
    for lo = 1, n, 2 * width do
      local mid, hi = min(lo + width, n + 1), min(lo + 2 * width, n + 1)
      local l, r = lo, mid
      for k = lo, hi - 1 do
        if l < mid and (r >= hi or src[l] <= src[r]) then
          dst[k] = src[l]; l = l + 1
        else
          dst[k] = src[r]; r = r + 1
        end
      end
    end
    src, dst, width = dst, src, width * 2
  end
  if src ~= a then for i = 1, n do a[i] = src[i] end end
end

local function sort_list(a)
  if #a <= SORT_IN_C then sort(a) else merge_sort(a) end
  return a
end

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function escape(c) return ESCAPES[c] or format("\\u%04x", byte(c)) end

-- A string in JSON quotes, cut to max bytes (at a character boundary).
local function quote(s, max)
  max = max or 60
  if #s > max then
    s = gsub(sub(s, 1, max), "[\xC0-\xFF][\x80-\xBF]*$", "") .. "..."
  end
  return '"' .. gsub(s, '[%c"\\]', escape) .. '"'
end

local function fmtnum(x)
  if mtype(x) == "integer" then return tostring(x) end
  if x ~= x then return "NaN" end
  if x == huge then return "infinity" elseif x == -huge then return "-infinity" end
  local s = format("%.15g", x)
  if tonumber(s) ~= x then s = format("%.17g", x) end
  return s
end

local PLURALS = { property = "properties" }
local function plural(n, word)
  return fmtnum(n) .. " " .. (n == 1 and word or PLURALS[word] or word .. "s")
end

-- What a table holds: "empty", "array" (keys 1..n), "object" (string keys),
-- "sparse" (positive integer keys with gaps) or "mixed"; and its key count.
local function classify(t)
  local n, maxk, strings, ints = 0, 0, true, true
  for k in next, t do
    n = n + 1
    if type(k) == "string" then
      ints = false
    elseif mtype(k) == "integer" and k >= 1 then
      strings = false
      if k > maxk then maxk = k end
    else
      strings, ints = false, false
    end
  end
  if n == 0 then return "empty", 0 end
  if strings then return "object", n end
  if ints then return (maxk == n and "array" or "sparse"), n end
  return "mixed", n
end

local function kind_of(v)
  local tv = type(v)
  if tv == "table" then return classify(v) end
  if tv == "nil" then return "null", 0 end
  return tv, 0
end

local KIND_TEXT = { empty = "empty object/array", sparse = "array with gaps",
                    mixed = "table with mixed keys" }

local function is_finite(x) return x - x == 0 end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  return sort_list(keys)
end

-- A short JSON-like rendering of a value for messages.
local function render(v, depth)
  local tv = type(v)
  if tv == "string" then return quote(v, 40) end
  if tv == "number" then return fmtnum(v) end
  if tv == "nil" then return "null" end
  if tv ~= "table" then return tv == "boolean" and tostring(v) or tv end
  depth = depth or 0
  local kind, n = classify(v)
  if kind == "empty" then return "{}" end
  if kind == "array" then
    if depth >= 2 then return "[...]" end
    local parts = {}
    for i = 1, min(n, 5) do parts[i] = render(rawget(v, i), depth + 1) end
    if n > 5 then parts[6] = "..." end
    return "[" .. concat(parts, ", ") .. "]"
  end
  if kind ~= "object" or depth >= 2 or n > SORT_IN_C then return "{...}" end
  local keys, parts = sorted_keys(v), {}
  for i = 1, min(n, 5) do parts[i] = quote(keys[i], 40) .. ": " .. render(rawget(v, keys[i]), depth + 1) end
  if n > 5 then parts[6] = "..." end
  return "{" .. concat(parts, ", ") .. "}"
end

-- A canonical string for deep equality (1 and 1.0 equal, key order ignored);
-- nil for a table that contains itself or nests deeper than MAX_DEPTH.
local function canon(v, onstack, depth)
  local tv = type(v)
  if tv == "string" then return "s" .. #v .. ":" .. v end
  if tv == "number" then
    local i = tointeger(v)
    return "n" .. (i and tostring(i) or format("%.17g", v))
  end
  if tv == "boolean" then return v and "T" or "F" end
  if tv ~= "table" then return "x" .. tostring(v) end
  if onstack[v] or depth > MAX_DEPTH then return nil end
  onstack[v] = true
  local parts, n = {}, 0
  for k, x in next, v do
    local ck, cx = canon(k, onstack, depth + 1), canon(x, onstack, depth + 1)
    if not ck or not cx then onstack[v] = nil; return nil end
    n = n + 1
    parts[n] = ck .. "=" .. cx
  end
  onstack[v] = nil
  return "{" .. concat(sort_list(parts), ",") .. "}"
end

-- ---------------------------------------------------------------- paths

local function segment(k)
  if type(k) == "number" then return "[" .. fmtnum(k - 1) .. "]" end
  if #k <= 60 and find(k, "^[%a_][%w_]*$") then return "." .. k end
  return "[" .. quote(k) .. "]"
end

local function path_text(path, extra)
  local parts = { "$" }
  for i = 1, #path do parts[i + 1] = segment(path[i]) end
  if extra ~= nil then parts[#parts + 1] = segment(extra) end
  return concat(parts)
end

-- ---------------------------------------------------------------- check

local COMBINATORS = { "allOf", "anyOf", "oneOf" }

local function is_count(x)
  return type(x) == "number" and x >= 0 and is_finite(x) and floor(x) == x
end

local check_node

local function check_list_of_schemas(st, list, path, depth)
  if type(list) ~= "table" or classify(list) ~= "array" then
    return false, path .. ": must be a non-empty list of schemas"
  end
  for i = 1, #list do
    local ok, err = check_node(st, list[i], path .. "[" .. (i - 1) .. "]", depth + 1)
    if not ok then return false, err end
  end
  return true
end

local function check_range(s, path, lo_key, hi_key)
  local lo, hi = rawget(s, lo_key), rawget(s, hi_key)
  if lo ~= nil and hi ~= nil and lo > hi then
    return false, format("%s: %s (%s) is greater than %s (%s), so no value can match",
      path, lo_key, fmtnum(lo), hi_key, fmtnum(hi))
  end
  return true
end

check_node = function(st, s, path, depth)
  local ts = type(s)
  if ts == "boolean" then return true end
  if ts ~= "table" then
    return false, path .. ": expected a schema (a table or boolean), got " .. ts
  end
  if st.paths[s] then return true end      -- checked already (or being checked)
  if depth > MAX_SCHEMA_DEPTH then
    return false, path .. ": schema is nested deeper than " .. MAX_SCHEMA_DEPTH .. " levels"
  end
  st.paths[s] = path
  st.nodes[#st.nodes + 1] = s
  for k in next, s do
    if type(k) ~= "string" then
      return false, path .. ": expected a schema (keywords with string keys), got a table with key "
        .. render(k)
    end
  end

  local t = rawget(s, "type")
  if t ~= nil then
    if type(t) == "string" then
      if not TYPES[t] then
        return false, format("%s.type: unknown type %s (known types: %s)", path, quote(t), TYPE_LIST)
      end
    elseif type(t) == "table" and classify(t) == "array" then
      for i = 1, #t do
        if type(t[i]) ~= "string" or not TYPES[t[i]] then
          return false, format("%s.type[%d]: unknown type %s (known types: %s)", path, i - 1,
            render(t[i]), TYPE_LIST)
        end
      end
    else
      return false, path .. ".type: must be a type name or a non-empty list of type names"
    end
  end

  local props = rawget(s, "properties")
  if props ~= nil then
    local kind = type(props) == "table" and classify(props)
    if kind ~= "object" and kind ~= "empty" then
      return false, path .. ".properties: must be a table of schemas keyed by property name"
    end
    for _, name in ipairs(sorted_keys(props)) do
      local ok, err = check_node(st, props[name], path .. ".properties" .. segment(name), depth + 1)
      if not ok then return false, err end
    end
  end

  local req = rawget(s, "required")
  if req ~= nil then
    local kind = type(req) == "table" and classify(req)
    if kind ~= "array" and kind ~= "empty" then
      return false, path .. ".required: must be a list of property names"
    end
    for i = 1, #req do
      if type(req[i]) ~= "string" then
        return false, format("%s.required[%d]: expected a property name (string), got %s",
          path, i - 1, render(req[i]))
      end
    end
  end

  local ap = rawget(s, "additionalProperties")
  if ap ~= nil then
    local ok, err = check_node(st, ap, path .. ".additionalProperties", depth + 1)
    if not ok then return false, err end
    if ap == false and req ~= nil then
      for i = 1, #req do
        if props == nil or rawget(props, req[i]) == nil then
          return false, format("%s.required[%d]: %s is required but not in properties, and "
            .. "additionalProperties is false, so no object can match", path, i - 1, quote(req[i]))
        end
      end
    end
  end

  local items = rawget(s, "items")
  if items ~= nil then
    if type(items) == "table" and classify(items) == "array" then
      return false, path .. ".items: a list of schemas (tuple form) is not supported; give one schema"
    end
    local ok, err = check_node(st, items, path .. ".items", depth + 1)
    if not ok then return false, err end
  end

  local enum = rawget(s, "enum")
  if enum ~= nil and (type(enum) ~= "table" or classify(enum) ~= "array") then
    return false, path .. ".enum: must be a non-empty list of values"
  end

  for _, k in ipairs{ "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf" } do
    local x = rawget(s, k)
    if x ~= nil and type(x) ~= "number" then
      if type(x) == "boolean" and find(k, "^exclusive") then
        return false, path .. "." .. k .. ": must be a number (the draft-4 boolean form is not supported)"
      end
      return false, path .. "." .. k .. ": must be a number, got " .. type(x)
    end
  end
  local m = rawget(s, "multipleOf")
  if m ~= nil and not (m > 0 and is_finite(m)) then
    return false, path .. ".multipleOf: must be a number greater than 0"
  end
  for _, k in ipairs{ "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties" } do
    local x = rawget(s, k)
    if x ~= nil and not is_count(x) then
      return false, path .. "." .. k .. ": must be a whole number >= 0"
    end
  end
  for _, r in ipairs{ { "minimum", "maximum" }, { "minLength", "maxLength" },
                      { "minItems", "maxItems" }, { "minProperties", "maxProperties" } } do
    local ok, err = check_range(s, path, r[1], r[2])
    if not ok then return false, err end
  end

  local u = rawget(s, "uniqueItems")
  if u ~= nil and type(u) ~= "boolean" then
    return false, path .. ".uniqueItems: must be true or false"
  end
  for _, k in ipairs{ "pattern", "format" } do
    local x = rawget(s, k)
    if x ~= nil and type(x) ~= "string" then
      return false, path .. "." .. k .. ": must be a string"
    end
  end

  for _, k in ipairs(COMBINATORS) do
    local list = rawget(s, k)
    if list ~= nil then
      local ok, err = check_list_of_schemas(st, list, path .. "." .. k, depth)
      if not ok then return false, err end
    end
  end
  local n = rawget(s, "not")
  if n ~= nil then
    local ok, err = check_node(st, n, path .. ".not", depth + 1)
    if not ok then return false, err end
  end
  return true
end

-- A schema reached again through allOf/anyOf/oneOf/not alone would be applied
-- to the same value forever: find such loops (depth-first, three colours).
local function find_combinator_loop(st)
  local colour = {}
  local function visit(s)
    colour[s] = "grey"
    local edges = {}
    for _, k in ipairs(COMBINATORS) do
      local list = rawget(s, k)
      if list then
        for i = 1, #list do edges[#edges + 1] = { list[i], "." .. k .. "[" .. (i - 1) .. "]" } end
      end
    end
    if rawget(s, "not") ~= nil then edges[#edges + 1] = { rawget(s, "not"), ".not" } end
    for _, e in ipairs(edges) do
      local c = e[1]
      if type(c) == "table" then
        if colour[c] == "grey" then
          return st.paths[s] .. e[2] .. ": loops back to " .. st.paths[c]
            .. " through allOf/anyOf/oneOf/not alone, which would never end"
        end
        if not colour[c] then
          local err = visit(c)
          if err then return err end
        end
      end
    end
    colour[s] = "black"
  end
  for _, s in ipairs(st.nodes) do
    if not colour[s] then
      local err = visit(s)
      if err then return err end
    end
  end
end

-- Is sch a usable schema? true, or false and a message naming the field.
function _M.check(sch)
  local st = { paths = {}, nodes = {} }
  local ok, err = check_node(st, sch, "schema", 0)
  if not ok then return false, err end
  err = find_combinator_loop(st)
  if err then return false, err end
  return true
end

-- ---------------------------------------------------------------- validate

local function fail(ctx, msg, extra)
  if ctx.full then return end
  local errs = ctx.errors
  errs[#errs + 1] = path_text(ctx.st.path, extra) .. ": " .. msg
  if #errs >= ctx.limit then ctx.full = true end
end

local function sub_ctx(ctx)
  return { st = ctx.st, errors = {}, limit = 1, full = false }
end

local function type_ok(name, v, kind)
  if name == "object" then return kind == "object" or kind == "empty" end
  if name == "array" then return kind == "array" or kind == "empty" end
  if name == "number" then return kind == "number" and is_finite(v) end
  if name == "integer" then
    return kind == "number" and (mtype(v) == "integer" or (is_finite(v) and floor(v) == v))
  end
  return kind == name          -- string, boolean, null
end

local function types_ok(t, v, kind)
  if type(t) == "string" then return type_ok(t, v, kind) end
  for i = 1, #t do if type_ok(t[i], v, kind) then return true end end
  return false
end

local function types_text(t)
  if type(t) == "string" then return t end
  if #t == 1 then return t[1] end
  return concat(t, ", ", 1, #t - 1) .. " or " .. t[#t]
end

local function got_text(v, kind)
  if kind == "number" and (mtype(v) == "float" and (not is_finite(v) or floor(v) ~= v)) then
    return fmtnum(v)
  end
  return KIND_TEXT[kind] or kind
end

local function equal(st, a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return rawequal(a, b) end
  local cb = st.canon[b]
  if cb == nil then cb = canon(b, {}, 0) or false; st.canon[b] = cb end
  return cb and canon(a, {}, 0) == cb
end

local node

local function descend(ctx, child, s, key, level)
  local st = ctx.st
  local path = st.path
  local n = #path + 1
  path[n] = key
  if n > MAX_DEPTH then
    fail(ctx, "is nested deeper than " .. MAX_DEPTH .. " levels")
  elseif type(child) == "table" then
    if st.onpath[child] then
      fail(ctx, "is a table that contains itself (a reference cycle)")
    else
      st.onpath[child] = true
      node(ctx, child, s, level + 1)
      st.onpath[child] = nil
    end
  else
    node(ctx, child, s, level + 1)
  end
  path[n] = nil
end

local function check_number(ctx, v, s)
  local x = s.minimum
  if x ~= nil and not (v >= x) then fail(ctx, "must be >= " .. fmtnum(x) .. ", got " .. fmtnum(v)) end
  x = s.maximum
  if x ~= nil and not (v <= x) then fail(ctx, "must be <= " .. fmtnum(x) .. ", got " .. fmtnum(v)) end
  x = s.exclusiveMinimum
  if x ~= nil and not (v > x) then fail(ctx, "must be > " .. fmtnum(x) .. ", got " .. fmtnum(v)) end
  x = s.exclusiveMaximum
  if x ~= nil and not (v < x) then fail(ctx, "must be < " .. fmtnum(x) .. ", got " .. fmtnum(v)) end
  x = s.multipleOf
  if x ~= nil then
    local ok
    if mtype(v) == "integer" and mtype(x) == "integer" then
      ok = v % x == 0
    else
      local q = v / x
      -- a float quotient like 0.3 / 0.1 = 2.9999999999999996 counts as whole
      ok = is_finite(q) and abs(q - floor(q + 0.5)) <= 1e-9 * abs(q)
    end
    if not ok then fail(ctx, "must be a multiple of " .. fmtnum(x) .. ", got " .. fmtnum(v)) end
  end
end

local function check_string(ctx, v, s)
  local lo, hi = s.minLength, s.maxLength
  if lo == nil and hi == nil then return end
  local n = ulen(v)
  if not n then return fail(ctx, "is not valid UTF-8") end
  if lo ~= nil and n < lo then
    fail(ctx, "must be at least " .. plural(lo, "character") .. " long, got " .. n)
  end
  if hi ~= nil and n > hi then
    fail(ctx, "must be at most " .. plural(hi, "character") .. " long, got " .. n)
  end
end

local function check_array(ctx, v, s, n, level)
  local x = s.minItems
  if x ~= nil and n < x then fail(ctx, "must have at least " .. plural(x, "item") .. ", got " .. n) end
  x = s.maxItems
  if x ~= nil and n > x then fail(ctx, "must have at most " .. plural(x, "item") .. ", got " .. n) end
  if s.uniqueItems == true and n > 1 then
    local scalars, tables = {}, {}
    for i = 1, n do
      local item, key, seen = rawget(v, i), nil, nil
      if type(item) == "table" then
        key, seen = canon(item, {}, 0), tables
        if not key then
          fail(ctx, "item [" .. (i - 1) .. "] cannot be compared: it contains itself or nests too deeply")
          break
        end
      elseif item == item then   -- NaN is unique anyway, and no table key
        key, seen = item, scalars
      end
      if key ~= nil then
        local j = seen[key]
        if j then
          fail(ctx, "items must be unique, but [" .. (j - 1) .. "] and [" .. (i - 1) .. "] are equal")
          break
        end
        seen[key] = i
      end
    end
  end
  local items = s.items
  if items ~= nil and items ~= true then
    for i = 1, n do
      if ctx.full then return end
      descend(ctx, rawget(v, i), items, i, level)
    end
  end
end

local function allowed_text(props)
  local names = props and sorted_keys(props) or {}
  if #names == 0 then return "no properties are allowed" end
  local parts = {}
  for i = 1, min(#names, 10) do parts[i] = quote(names[i], 40) end
  if #names > 10 then parts[11] = "..." end
  return "allowed: " .. concat(parts, ", ")
end

local function check_object(ctx, v, s, n, level, kind)
  local st = ctx.st
  local x = s.minProperties
  if x ~= nil and n < x then fail(ctx, "must have at least " .. plural(x, "property") .. ", got " .. n) end
  x = s.maxProperties
  if x ~= nil and n > x then fail(ctx, "must have at most " .. plural(x, "property") .. ", got " .. n) end
  local req = s.required
  if req ~= nil then
    for i = 1, #req do
      if rawget(v, req[i]) == nil then fail(ctx, "missing required property " .. quote(req[i])) end
    end
  end
  local props = s.properties
  if props ~= nil then
    local names = st.sorted[props]
    if not names then names = sorted_keys(props); st.sorted[props] = names end
    for i = 1, #names do
      if ctx.full then return end
      local name = names[i]
      local pv = rawget(v, name)
      if pv ~= nil then descend(ctx, pv, props[name], name, level) end
    end
  end
  local ap = s.additionalProperties
  if ap ~= nil and ap ~= true and kind == "object" then
    local extra = {}
    for k in next, v do
      if props == nil or rawget(props, k) == nil then extra[#extra + 1] = k end
    end
    -- sorted for stable messages; a huge set is left unsorted (few are reported)
    if #extra <= SORT_IN_C then sort(extra) end
    for i = 1, #extra do
      if ctx.full then return end
      if ap == false then
        fail(ctx, "is not an allowed property (" .. allowed_text(props) .. ")", extra[i])
      else
        descend(ctx, rawget(v, extra[i]), ap, extra[i], level)
      end
    end
  end
end

-- The first error of each failed alternative, for anyOf/oneOf messages.
local function alternatives_text(ctx, firsts, count)
  local here = path_text(ctx.st.path) .. ": "
  local parts = {}
  for i = 1, min(count, 5) do
    local e = firsts[i]
    if sub(e, 1, #here) == here then e = sub(e, #here + 1) end
    if #e > 200 then e = sub(e, 1, 200) .. "..." end
    parts[i] = i .. ") " .. e
  end
  if count > 5 then parts[#parts + 1] = "..." end
  return concat(parts, "; ")
end

local function check_combinators(ctx, v, s, level)
  local list = s.allOf
  if list ~= nil then
    for i = 1, #list do
      if ctx.full then return end
      node(ctx, v, list[i], level + 1)
    end
  end
  list = s.anyOf
  if list ~= nil and not ctx.full then
    local firsts = {}
    for i = 1, #list do
      local sc = sub_ctx(ctx)
      node(sc, v, list[i], level + 1)
      if #sc.errors == 0 then firsts = nil; break end
      firsts[i] = sc.errors[1]
    end
    if firsts then
      fail(ctx, "does not match any of the " .. #list .. " allowed schemas (anyOf): "
        .. alternatives_text(ctx, firsts, #list))
    end
  end
  list = s.oneOf
  if list ~= nil and not ctx.full then
    local firsts, matched = {}, {}
    for i = 1, #list do
      local sc = sub_ctx(ctx)
      node(sc, v, list[i], level + 1)
      if #sc.errors == 0 then
        matched[#matched + 1] = i
        if #matched == 2 then break end
      else
        firsts[i] = sc.errors[1]
      end
    end
    if #matched == 0 then
      fail(ctx, "does not match any of the " .. #list .. " schemas in oneOf: "
        .. alternatives_text(ctx, firsts, #list))
    elseif #matched > 1 then
      fail(ctx, "matches more than one of the " .. #list .. " schemas in oneOf (options " .. matched[1]
        .. " and " .. matched[2] .. "), but must match exactly one")
    end
  end
  local n = s["not"]
  if n ~= nil and not ctx.full then
    local sc = sub_ctx(ctx)
    node(sc, v, n, level + 1)
    if #sc.errors == 0 then fail(ctx, "must not match the schema in \"not\"") end
  end
end

node = function(ctx, v, s, level)
  if s == true then return end
  if s == false then return fail(ctx, "no value is allowed here") end
  if level > MAX_LEVEL then
    return fail(ctx, "schemas are applied more than " .. MAX_LEVEL .. " levels deep here")
  end
  local kind, count = kind_of(v)
  local t = s.type
  if t ~= nil and not types_ok(t, v, kind) then
    return fail(ctx, "expected " .. types_text(t) .. ", got " .. got_text(v, kind))
  end
  if s.const ~= nil and not equal(ctx.st, v, s.const) then
    fail(ctx, "must be " .. render(s.const))
  end
  local enum = s.enum
  if enum ~= nil then
    local found = false
    for i = 1, #enum do
      if equal(ctx.st, v, enum[i]) then found = true; break end
    end
    if not found then
      local parts = {}
      for i = 1, min(#enum, 10) do parts[i] = render(enum[i]) end
      if #enum > 10 then parts[11] = "... (" .. (#enum - 10) .. " more)" end
      fail(ctx, "must be one of " .. concat(parts, ", "))
    end
  end
  if kind == "number" then
    check_number(ctx, v, s)
  elseif kind == "string" then
    check_string(ctx, v, s)
  elseif kind == "array" or kind == "object" or kind == "empty" then
    if kind ~= "object" then check_array(ctx, v, s, count, level) end
    if kind ~= "array" and not ctx.full then check_object(ctx, v, s, count, level, kind) end
  end
  if not ctx.full then check_combinators(ctx, v, s, level) end
end

local checked = setmetatable({}, { __mode = "k" })   -- schemas check() accepted

-- true, or false and a list of "<path>: <sentence>" strings. A schema that
-- check() refuses raises (tables are checked the first time they are seen).
function _M.validate(value, sch)
  if type(sch) ~= "boolean" and not checked[sch] then
    local ok, err = _M.check(sch)
    if not ok then error("schema.validate: invalid schema: " .. err, 2) end
    checked[sch] = true
  end
  local st = { path = {}, onpath = {}, sorted = {}, canon = {} }
  local ctx = { st = st, errors = {}, limit = MAX_ERRORS + 1, full = false }
  if type(value) == "table" then st.onpath[value] = true end
  node(ctx, value, sch, 0)
  local errs = ctx.errors
  if #errs == 0 then return true end
  if #errs > MAX_ERRORS then
    errs[#errs] = nil
    errs.truncated = true
  end
  return false, errs
end

-- One message for the model: a heading and one error per line.
function _M.describe_errors(errors)
  if type(errors) == "string" then return errors end
  if type(errors) ~= "table" or #errors == 0 then return "no errors" end
  local lines = { "invalid arguments (" .. plural(#errors, "error")
    .. (errors.truncated and ", more not shown" or "") .. "):" }
  for i = 1, #errors do lines[i + 1] = "- " .. tostring(errors[i]) end
  return concat(lines, "\n")
end

return _M
