-- json — JSON for sandboxed scripts, in plain Lua (so it stays inside the
-- sandbox's memory cap and CPU budget). Also a global: json.encode(v).
--
--   json.encode(value) -> text        object keys sorted, so equal tables give equal text
--   json.decode(text)  -> value | nil, message
--
-- Tables with positive integer keys (or empty) are arrays, holes written
-- as null; tables with string keys are objects; anything else (functions,
-- cycles, mixed or sparse keys, NaN) is an error naming where it is. JSON
-- null decodes to nil (a hole in an array).

local json = {}

local byte, char, concat, find, format, gsub, sort = string.byte, string.char, table.concat, string.find, string.format,
                                                    string.gsub, table.sort
local floor, huge, mtype = math.floor, math.huge, math.type

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }

local function escape(c) return escapes[c] or format("\\u%04x", byte(c)) end

local function quote(s)
  if not find(s, '[%c"\\]') then return '"' .. s .. '"' end -- most text: scanned once, nothing built
  return '"' .. gsub(s, '[%c"\\]', escape) .. '"'
end

-- An array: only positive integer keys. Holes (a decoded null) become null,
-- but a sparse table ({[1e9] = 1}) is refused rather than padded.
local function is_array(t)
  local n, max = 0, 0
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 then return false end
    n = n + 1
    if k > max then max = k end
  end
  if max > 2 * n + 16 then return false end
  return true, max
end

local encode_value

-- Where a value is, for error messages: "value.items[2].name" from the keys
-- on the way down (trail[1..depth]); built only when there is an error.
local function where(trail, depth)
  local parts = { "value" }
  for i = 1, depth do
    local k = trail[i]
    parts[#parts + 1] = mtype(k) == "integer" and ("[" .. k .. "]") or ("." .. k)
  end
  return concat(parts)
end

local function encode_table(t, out, depth, trail)
  if depth > 64 then error(("json.encode: %s is nested too deeply (or a cycle)"):format(where(trail, depth)), 0) end
  local array, n = is_array(t)
  if array then
    if n == 0 then out[#out + 1] = "[]" return end
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      trail[depth + 1] = i
      encode_value(rawget(t, i), out, depth + 1, trail)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in next, t do
    if type(k) ~= "string" then
      error(("json.encode: %s has a key that is not a string (%s)"):format(where(trail, depth), type(k)), 0)
    end
    keys[#keys + 1] = k
  end
  sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = quote(k)
    out[#out + 1] = ":"
    trail[depth + 1] = k
    encode_value(rawget(t, k), out, depth + 1, trail)
  end
  out[#out + 1] = "}"
end

function encode_value(v, out, depth, trail)
  local t = type(v)
  if t == "string" then out[#out + 1] = quote(v)
  elseif t == "number" then
    if v ~= v or v == huge or v == -huge then
      error(("json.encode: %s is not a finite number"):format(where(trail, depth)), 0)
    end
    if mtype(v) == "integer" or (v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53) then
      out[#out + 1] = format("%d", v)
    else
      local short = format("%.14g", v) -- the shortest text that reads back as v
      out[#out + 1] = tonumber(short) == v and short or format("%.17g", v)
    end
  elseif t == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif t == "nil" then out[#out + 1] = "null"
  elseif t == "table" then encode_table(v, out, depth, trail)
  else error(("json.encode: %s is a %s, which JSON cannot hold"):format(where(trail, depth), t), 0) end
end

function json.encode(v)
  if type(v) == "string" then return quote(v) end
  local out = {}
  encode_value(v, out, 0, {})
  return concat(out)
end

-- ---- decoding ----

local function decode_error(text, pos, what)
  local line = select(2, text:sub(1, pos):gsub("\n", "")) + 1
  error({ json = ("json.decode: %s at line %d (byte %d)"):format(what, line, pos) }, 0)
end

local function skip(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end

local function utf8_of(cp)
  return utf8.char(cp)
end

local decode_at

local function decode_string(text, pos)
  local out, i = {}, pos + 1
  while true do
    local s, e = text:find('["\\%c]', i)
    if not s then decode_error(text, pos, "unterminated string") end
    out[#out + 1] = text:sub(i, s - 1)
    local c = text:sub(s, s)
    if c == '"' then return concat(out), s + 1 end
    if c ~= "\\" then decode_error(text, s, "control character in a string") end
    local esc = text:sub(s + 1, s + 1)
    local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" })[esc]
    if simple then
      out[#out + 1] = simple
      i = s + 2
    elseif esc == "u" then
      local hex = text:match("^%x%x%x%x", s + 2)
      if not hex then decode_error(text, s, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = s + 6
      if cp >= 0xD800 and cp < 0xDC00 then
        local lo = text:match("^\\u(%x%x%x%x)", i)
        lo = lo and tonumber(lo, 16)
        if lo and lo >= 0xDC00 and lo < 0xE000 then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        else
          cp = 0xFFFD
        end
      elseif cp >= 0xDC00 and cp < 0xE000 then
        cp = 0xFFFD
      end
      out[#out + 1] = utf8_of(cp)
    else
      decode_error(text, s, "bad escape")
    end
  end
end

function decode_at(text, pos, depth)
  if depth > 200 then decode_error(text, pos, "nested too deeply") end
  pos = skip(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local obj = {}
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "}" then return obj, pos + 1 end
    while true do
      if text:sub(pos, pos) ~= '"' then decode_error(text, pos, "expected a string key") end
      local k
      k, pos = decode_string(text, pos)
      pos = skip(text, pos)
      if text:sub(pos, pos) ~= ":" then decode_error(text, pos, "expected ':'") end
      local v
      v, pos = decode_at(text, pos + 1, depth + 1)
      obj[k] = v
      pos = skip(text, pos)
      local d = text:sub(pos, pos)
      if d == "}" then return obj, pos + 1 end
      if d ~= "," then decode_error(text, pos, "expected ',' or '}'") end
      pos = skip(text, pos + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "]" then return arr, pos + 1 end
    while true do
      local v
      v, pos = decode_at(text, pos, depth + 1)
      n = n + 1
      arr[n] = v
      pos = skip(text, pos)
      local d = text:sub(pos, pos)
      if d == "]" then return arr, pos + 1 end
      if d ~= "," then decode_error(text, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(text, pos)
  elseif c == "t" and text:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif c == "f" and text:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif c == "n" and text:sub(pos, pos + 3) == "null" then return nil, pos + 4
  else
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if num and num ~= "" and num ~= "-" then
      local v = math.tointeger(tonumber(num)) or tonumber(num)
      if v == nil then decode_error(text, pos, "bad number") end
      return v, pos + #num
    end
    if pos > #text then decode_error(text, pos, "unexpected end") end
    decode_error(text, pos, "unexpected character '" .. c .. "'")
  end
end

function json.decode(text)
  if type(text) ~= "string" then return nil, "json.decode: expected a string, got " .. type(text) end
  local ok, v, pos = pcall(decode_at, text, 1, 0)
  if not ok then
    if type(v) == "table" and v.json then return nil, v.json end
    error(v, 0) -- a broken limit, not bad JSON
  end
  pos = skip(text, pos)
  if pos <= #text then return nil, ("json.decode: trailing characters at byte %d"):format(pos) end
  return v
end

return json
