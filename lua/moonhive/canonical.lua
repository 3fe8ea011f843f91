-- moonhive.canonical — one text for one value: JSON with object keys sorted,
-- integers without a fraction and other numbers with 17 significant digits.
-- Equal requests give equal texts, so their SHA-256 can key a cache.

local _M = {}

local concat, sort, fmt = table.concat, table.sort, string.format

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or fmt("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
  end
  return true
end

local function encode(v, out, depth)
  if depth > 64 then error("canonical: value nested too deeply", 0) end
  local t = type(v)
  if v == nil then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = fmt("%d", v)
    elseif v ~= v or v == math.huge or v == -math.huge then error("canonical: number out of range", 0)
    elseif v % 1 == 0 and v >= -2^53 and v <= 2^53 then out[#out + 1] = fmt("%d", v)
    else out[#out + 1] = fmt("%.17g", v) end
  elseif t == "string" then out[#out + 1] = quote(v)
  elseif t == "table" then
    if next(v) ~= nil and is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out, depth + 1)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = quote(k)
        out[#out + 1] = ":"
        local value = v[k]
        if value == nil then value = v[tonumber(k)] end
        encode(value, out, depth + 1)
      end
      out[#out + 1] = "}"
    end
  else
    error("canonical: cannot encode a " .. t, 0)
  end
end

function _M.encode(v)
  local out = {}
  encode(v, out, 0)
  return concat(out)
end

return _M
