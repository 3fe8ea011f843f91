-- tools/calculator — arithmetic the model should not do in its head. A small
-- parser of its own (numbers, + - * / % ^, parentheses, pi, e and a few
-- functions), never Lua's `load`: an expression cannot run code.

local funcs = {
  sqrt = math.sqrt, abs = math.abs, floor = math.floor, ceil = math.ceil, exp = math.exp,
  sin = math.sin, cos = math.cos, tan = math.tan,
  log = function(x, base) if base then return math.log(x, base) end return math.log(x) end,
  round = function(x, digits)
    local m = 10 ^ (digits or 0)
    return math.floor(x * m + 0.5) / m
  end,
  min = math.min, max = math.max,
}
local consts = { pi = math.pi, e = math.exp(1) }

local function evaluate(src)
  if #src > 1000 then error("the expression is longer than 1000 characters", 0) end
  local pos = 1
  local function skip() pos = src:find("[^%s]", pos) or #src + 1 end
  local function peek() skip() return src:sub(pos, pos) end
  local function fail(what) error(("%s at position %d in '%s'"):format(what, pos, src), 0) end
  local expr
  local depth = 0
  local function primary()
    depth = depth + 1
    if depth > 100 then fail("nested too deeply") end
    local c = peek()
    local v
    if c == "(" then
      pos = pos + 1
      v = expr()
      if peek() ~= ")" then fail("expected ')'") end
      pos = pos + 1
    elseif c == "-" then
      pos = pos + 1
      v = -primary()
    elseif c == "+" then
      pos = pos + 1
      v = primary()
    elseif c:match("[%d%.]") then
      local num = src:match("^%d*%.?%d*[eE][-+]?%d+", pos) or src:match("^%d*%.?%d*", pos)
      v = tonumber(num)
      if not v then fail("bad number") end
      pos = pos + #num
    elseif c:match("[%a_]") then
      local name = src:match("^[%a_][%w_]*", pos)
      pos = pos + #name
      if consts[name] then
        v = consts[name]
      elseif funcs[name] then
        if peek() ~= "(" then fail("expected '(' after " .. name) end
        pos = pos + 1
        local args = {}
        if peek() ~= ")" then
          repeat
            args[#args + 1] = expr()
            local sep = peek()
            if sep == "," then pos = pos + 1 end
          until sep ~= ","
        end
        if peek() ~= ")" then fail("expected ')'") end
        pos = pos + 1
        if #args == 0 then fail(name .. " needs an argument") end
        v = funcs[name](table.unpack(args))
      else
        fail("unknown name '" .. name .. "'")
      end
    else
      fail(c == "" and "unexpected end" or ("unexpected '" .. c .. "'"))
    end
    depth = depth - 1
    return v
  end
  local function power()
    local base = primary()
    if peek() == "^" then
      pos = pos + 1
      return base ^ power() -- right-associative
    end
    return base
  end
  local function term()
    local v = power()
    while true do
      local op = peek()
      if op == "*" then pos = pos + 1 v = v * power()
      elseif op == "/" then pos = pos + 1 v = v / power()
      elseif op == "%" then pos = pos + 1 v = v % power()
      else return v end
    end
  end
  function expr()
    local v = term()
    while true do
      local op = peek()
      if op == "+" then pos = pos + 1 v = v + term()
      elseif op == "-" then pos = pos + 1 v = v - term()
      else return v end
    end
  end
  local v = expr()
  if peek() ~= "" then fail("unexpected '" .. peek() .. "'") end
  if v ~= v or v == math.huge or v == -math.huge then error("the result is not a finite number", 0) end
  return math.tointeger(v) or v
end

return tool{
  name = "calculator",
  description = "Evaluate an arithmetic expression exactly: + - * / % ^, parentheses, pi, e, " ..
                "sqrt, abs, floor, ceil, round(x, digits), log(x, base), exp, sin, cos, tan, min, max.",
  params = {
    type = "object",
    properties = { expression = { type = "string", minLength = 1, maxLength = 1000 } },
    required = { "expression" },
  },
  timeout = 1000,
  run = function(args) return { result = evaluate(args.expression) } end,
  evaluate = evaluate,
}
