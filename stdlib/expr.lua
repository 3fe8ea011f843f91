-- expr — a small, safe expression language for workflow conditions and
-- templates, parsed and evaluated in plain Lua (never load()), so a
-- condition from a JSON file can only read values and compare them.
--
--   local expr = require "expr"
--   local c, err = expr.compile('steps.review.output contains "APPROVED" and input.level >= 2')
--   local v = c:eval({ input = {...}, steps = {...} })   -- raises "expression error at column N: ..."
--   local t, err = expr.template("Fix {{input.task}}: {{steps.review.output}}")
--   local text = t:render(env)
--
-- The language:
--   literals     "text", 'text' (escapes \" \' \\ \n \t), 12, 3.5, true, false, nil (or null)
--   paths        input.task, steps.review.output, steps.list.output[1], steps.list.output.1
--                (a missing field on the way gives nil, never an error)
--   comparisons  ==  ~= (or !=)  <  <=  >  >=     (< and friends: two numbers or two strings)
--                a contains b   (substring of a string; an element or key of a table)
--   logic        and (&&), or (||), not (!), parentheses; nil and false are false, all else true;
--                a and b / a or b give one of their operands, as in Lua; not binds looser
--                than a comparison: not a contains b is not (a contains b)
--   minus        -x for a number
--   functions    contains(a, b), len(x), lower(s), upper(s), starts_with(s, p), ends_with(s, p),
--                number(x) (nil when x is not a number), text(x) (strings as they are, else JSON)
-- Comparisons do not chain (a < b < c is an error). == compares tables by content.
--
-- Templates: text with {{ expression }} placeholders. A template that is one
-- placeholder and nothing else renders to the value itself (a table stays a
-- table); otherwise each value is inserted as text (nil as "", strings as
-- they are, other values as JSON).
--
-- Errors, at compile or at evaluation: "expression error at column N: what".
-- Columns count bytes from 1 (in a template, from the template's start).

local json = require "json"

local M = {}

local sub, find, format, concat = string.sub, string.find, string.format, table.concat
local mtype, tointeger = math.type, math.tointeger

local MAX_LENGTH = 10000
local MAX_DEPTH = 100

local function fail(col, msg) error(format("expression error at column %d: %s", col, msg), 0) end

-- ---- tokens: {kind=, value=, col=}; kinds: name, number, string, op, eof ----

local KEYWORDS = { ["and"] = "and", ["or"] = "or", ["not"] = "not", ["true"] = "true", ["false"] = "false",
                   ["nil"] = "nil", ["null"] = "nil", contains = "contains" }
local OPERATORS = { "==", "~=", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ".", ",", "-" }
local ALIASES = { ["!="] = "~=", ["&&"] = "and", ["||"] = "or", ["!"] = "not" }
local ESCAPES = { n = "\n", t = "\t", r = "\r", ['"'] = '"', ["'"] = "'", ["\\"] = "\\" }

local function read_string(text, pos, col0)
  local quote, out, i = sub(text, pos, pos), {}, pos + 1
  while true do
    local c = sub(text, i, i)
    if c == "" or c == "\n" then fail(col0 + pos - 1, "unterminated string") end
    if c == quote then return concat(out), i + 1 end
    if c == "\\" then
      local e = sub(text, i + 1, i + 1)
      if not ESCAPES[e] then fail(col0 + i - 1, "bad escape '\\" .. e .. "' in a string") end
      out[#out + 1] = ESCAPES[e]
      i = i + 2
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
end

local function tokenize(text, col0)
  local tokens, pos, n = {}, 1, #text
  while true do
    pos = find(text, "[^ \t\r\n]", pos) or n + 1
    local col = col0 + pos - 1
    if pos > n then
      tokens[#tokens + 1] = { kind = "eof", col = col }
      return tokens
    end
    local c = sub(text, pos, pos)
    local s, e = find(text, "^[%a_][%w_]*", pos)
    if s then
      local word = sub(text, s, e)
      tokens[#tokens + 1] = KEYWORDS[word] and { kind = "op", value = KEYWORDS[word], col = col, word = word }
                            or { kind = "name", value = word, col = col }
      pos = e + 1
    elseif find(c, "%d") then
      local prev = tokens[#tokens]
      if prev and prev.value == "." then -- a field number: output.1.2
        s, e = find(text, "^%d+", pos)
      else
        s, e = find(text, "^%d+%.?%d*", pos)
        e = select(2, find(text, "^[eE][+-]?%d+", e + 1)) or e
      end
      if find(text, "^[%w_]", e + 1) then fail(col, "malformed number") end
      tokens[#tokens + 1] = { kind = "number", value = tonumber(sub(text, s, e)), col = col }
      pos = e + 1
    elseif c == '"' or c == "'" then
      local value
      value, pos = read_string(text, pos, col0)
      tokens[#tokens + 1] = { kind = "string", value = value, col = col }
    else
      local op
      for _, o in ipairs(OPERATORS) do
        if sub(text, pos, pos + #o - 1) == o then op = o break end
      end
      if not op then
        if c == "=" then fail(col, "'=' is not an operator (use '==' to compare)") end
        fail(col, format("unexpected character '%s'", c))
      end
      tokens[#tokens + 1] = { kind = "op", value = ALIASES[op] or op, col = col, word = op }
      pos = pos + #op
    end
  end
end

-- ---- parsing: recursive descent into nodes {op=, col=, ...} ----

local FUNCTIONS = { contains = 2, len = 1, lower = 1, upper = 1, starts_with = 2, ends_with = 2, number = 1, text = 1 }
local COMPARE = { ["=="] = true, ["~="] = true, ["<"] = true, ["<="] = true, [">"] = true, [">="] = true,
                  contains = true }

local function show(tok)
  if tok.kind == "eof" then return "the end of the expression" end
  if tok.kind == "string" then return "a string" end
  if tok.kind == "number" then return "a number" end
  return "'" .. (tok.word or tok.value) .. "'"
end

local Parser = {}
Parser.__index = Parser

function Parser:peek() return self.tokens[self.i] end

function Parser:next()
  local t = self.tokens[self.i]
  self.i = self.i + 1
  return t
end

function Parser:is(value)
  local t = self.tokens[self.i]
  return t.kind == "op" and t.value == value
end

function Parser:expect(value, what)
  if not self:is(value) then fail(self:peek().col, format("expected %s, found %s", what, show(self:peek()))) end
  return self:next()
end

function Parser:enter(col)
  self.depth = self.depth + 1
  if self.depth > MAX_DEPTH then fail(col, "nested too deeply") end
end

local parse_expr

-- A path or a call, starting at a name token.
function Parser:name(tok)
  if self:is("(") then
    local arity = FUNCTIONS[tok.value]
    if not arity then fail(tok.col, format("unknown function '%s'", tok.value)) end
    self:next()
    self:enter(tok.col)
    local args = {}
    if not self:is(")") then
      repeat
        if #args > 0 then self:next() end
        args[#args + 1] = parse_expr(self)
      until not self:is(",")
    end
    self:expect(")", format("')' to close the call of %s at column %d", tok.value, tok.col))
    self.depth = self.depth - 1
    if #args ~= arity then
      fail(tok.col, format("%s takes %d argument%s, not %d", tok.value, arity, arity == 1 and "" or "s", #args))
    end
    return { op = "call", fn = tok.value, args = args, col = tok.col }
  end
  local node = { op = "path", root = tok.value, keys = {}, col = tok.col }
  while true do
    if self:is(".") then
      self:next()
      local k = self:next()
      if k.kind == "name" or (k.kind == "op" and k.word and find(k.word, "^[%a_]")) then
        node.keys[#node.keys + 1] = k.word or k.value
      elseif k.kind == "number" and mtype(k.value) == "integer" then
        node.keys[#node.keys + 1] = k.value
      else
        fail(k.col, format("expected a field name after '.', found %s", show(k)))
      end
    elseif self:is("[") then
      local open = self:next()
      self:enter(open.col)
      local key = parse_expr(self)
      self:expect("]", format("']' to close the '[' at column %d", open.col))
      self.depth = self.depth - 1
      node.keys[#node.keys + 1] = key
    else
      return node
    end
  end
end

function Parser:primary()
  local tok = self:next()
  if tok.kind == "number" or tok.kind == "string" then return { op = "value", value = tok.value, col = tok.col } end
  if tok.kind == "name" then return self:name(tok) end
  if tok.kind == "op" then
    if tok.value == "true" then return { op = "value", value = true, col = tok.col } end
    if tok.value == "false" then return { op = "value", value = false, col = tok.col } end
    if tok.value == "nil" then return { op = "value", value = nil, col = tok.col } end
    if tok.value == "contains" and self:is("(") then return self:name({ value = "contains", col = tok.col }) end
    if tok.value == "(" then
      self:enter(tok.col)
      local e = parse_expr(self)
      self:expect(")", format("')' to close the '(' at column %d", tok.col))
      self.depth = self.depth - 1
      return e
    end
  end
  fail(tok.col, "expected a value, found " .. show(tok))
end

-- A prefix operator: the token at hand, then operand(self) -> {op = node_op, a=}.
local function prefixed(self, node_op, operand)
  local tok = self:next()
  self:enter(tok.col)
  local a = operand(self)
  self.depth = self.depth - 1
  return { op = node_op, a = a, col = tok.col }
end

function Parser:unary()
  if self:is("-") then return prefixed(self, "neg", Parser.unary) end
  return self:primary()
end

function Parser:comparison()
  local a = self:unary()
  local tok = self:peek()
  if tok.kind == "op" and COMPARE[tok.value] then
    self:next()
    local b = self:unary()
    local after = self:peek()
    if after.kind == "op" and COMPARE[after.value] then
      fail(after.col, format("comparisons do not chain: use 'and' before %s", show(after)))
    end
    return { op = tok.value, a = a, b = b, col = tok.col }
  end
  return a
end

-- not binds looser than a comparison: not a contains b is not (a contains b)
function Parser:negation()
  if self:is("not") then return prefixed(self, "not", Parser.negation) end
  return self:comparison()
end

-- A left-associative chain of op ("and", "or") over operand(self).
local function chain(self, op, operand)
  local a = operand(self)
  while self:is(op) do
    local tok = self:next()
    a = { op = op, a = a, b = operand(self), col = tok.col }
  end
  return a
end

function Parser:conjunction() return chain(self, "and", Parser.negation) end

function parse_expr(self) return chain(self, "or", Parser.conjunction) end

-- The paths an expression reads: {{root=, first=, col=}, ...} (first: the
-- first key when it is a plain name, else nil).
local function collect_paths(node, out)
  if node.op == "path" then
    local k = node.keys[1]
    out[#out + 1] = { root = node.root, first = type(k) == "string" and k or nil, col = node.col }
    for _, key in ipairs(node.keys) do
      if type(key) == "table" then collect_paths(key, out) end
    end
  end
  for _, child in ipairs({ node.a, node.b }) do collect_paths(child, out) end
  for _, arg in ipairs(node.args or {}) do collect_paths(arg, out) end
  return out
end

local function parse(text, col0)
  if #text > MAX_LENGTH then fail(col0, format("the expression is longer than %d characters", MAX_LENGTH)) end
  local p = setmetatable({ tokens = tokenize(text, col0), i = 1, depth = 0 }, Parser)
  if p:peek().kind == "eof" then fail(p:peek().col, "the expression is empty") end
  local ast = parse_expr(p)
  local rest = p:peek()
  if rest.kind ~= "eof" then fail(rest.col, format("unexpected %s after the expression", show(rest))) end
  return ast
end

-- ---- evaluation ----

local function truthy(v) return v ~= nil and v ~= false end
M.truthy = truthy

local function equal(a, b, depth)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" or depth > 64 then return false end
  for k, v in pairs(a) do
    if not equal(v, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function as_text(v)
  if type(v) == "string" then return v end
  if v == nil then return "" end
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  local ok, t = pcall(json.encode, v)
  return ok and t or tostring(v)
end

local function contains(a, b)
  if type(a) == "string" then
    if type(b) == "number" then b = tostring(b) end
    return type(b) == "string" and find(a, b, 1, true) ~= nil
  end
  if type(a) == "table" then
    if type(b) == "string" and a[b] ~= nil then return true end
    for _, v in pairs(a) do
      if equal(v, b, 0) then return true end
    end
  end
  return false
end

local function kind_of(v)
  if v == nil then return "nil" end
  if type(v) == "table" then return "a table" end
  return "a " .. type(v)
end

local function need_string(v, node, fn)
  if type(v) ~= "string" then fail(node.col, format("%s needs a string, not %s", fn, kind_of(v))) end
  return v
end

local CALLS = {
  contains = function(_, a, b) return contains(a, b) end,
  len = function(node, v)
    if type(v) == "string" then return #v end
    if type(v) == "table" then
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      return n
    end
    if v == nil then return 0 end
    fail(node.col, "len needs a string or a table, not " .. kind_of(v))
  end,
  lower = function(node, s) return need_string(s, node, "lower"):lower() end,
  upper = function(node, s) return need_string(s, node, "upper"):upper() end,
  starts_with = function(node, s, p)
    return sub(need_string(s, node, "starts_with"), 1, #need_string(p, node, "starts_with")) == p
  end,
  ends_with = function(node, s, p)
    need_string(s, node, "ends_with")
    return #need_string(p, node, "ends_with") == 0 or sub(s, -#p) == p
  end,
  number = function(_, v)
    if type(v) == "number" then return v end
    if type(v) ~= "string" then return nil end
    return tonumber(v)
  end,
  text = function(_, v) return as_text(v) end,
}

local eval

local function index(v, key)
  if type(v) ~= "table" then return nil end
  local r = v[key]
  if r == nil and mtype(key) == "float" then r = v[tointeger(key)] end
  return r
end

local ORDER = { ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
                [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end }

function eval(node, env)
  local op = node.op
  if op == "value" then return node.value end
  if op == "path" then
    local v = env[node.root]
    for _, key in ipairs(node.keys) do
      if type(key) == "table" then key = eval(key, env) end
      v = index(v, key)
      if v == nil then return nil end
    end
    return v
  end
  if op == "and" then
    local a = eval(node.a, env)
    if not truthy(a) then return a end
    return eval(node.b, env)
  end
  if op == "or" then
    local a = eval(node.a, env)
    if truthy(a) then return a end
    return eval(node.b, env)
  end
  if op == "not" then return not truthy(eval(node.a, env)) end
  if op == "neg" then
    local a = eval(node.a, env)
    if type(a) ~= "number" then fail(node.col, "'-' needs a number, not " .. kind_of(a)) end
    return -a
  end
  if op == "call" then
    local args = {}
    for i, a in ipairs(node.args) do args[i] = eval(a, env) end
    return CALLS[node.fn](node, args[1], args[2])
  end
  local a, b = eval(node.a, env), eval(node.b, env)
  if op == "==" then return equal(a, b, 0) end
  if op == "~=" then return not equal(a, b, 0) end
  if op == "contains" then return contains(a, b) end
  if (type(a) == "number" and type(b) == "number") or (type(a) == "string" and type(b) == "string") then
    return ORDER[op](a, b)
  end
  fail(node.col, format("'%s' compares two numbers or two strings, not %s and %s", op, kind_of(a), kind_of(b)))
end

-- ---- the API ----

local Expr = {}
Expr.__index = Expr

-- The value of the expression in env (a table of root names); raises
-- "expression error at column N: ..." when a value has the wrong type.
function Expr:eval(env)
  return eval(self.ast, env or {})
end

-- text -> a compiled expression {text=, paths=, :eval(env)}, or nil and
-- "expression error at column N: ...".
function M.compile(text, col0)
  if type(text) ~= "string" then return nil, "expression error at column 1: an expression must be a string" end
  local ok, ast = pcall(parse, text, col0 or 1)
  if not ok then return nil, ast end
  return setmetatable({ text = text, ast = ast, paths = collect_paths(ast, {}) }, Expr)
end

-- Compiles and evaluates text in env at once; raises on any error.
function M.eval(text, env)
  local c, err = M.compile(text)
  if not c then error(err, 0) end
  return c:eval(env)
end

local Template = {}
Template.__index = Template

-- The rendered template: the value itself for a lone placeholder, else text.
function Template:render(env)
  if self.whole then return self.parts[1]:eval(env or {}) end
  local out = {}
  for i, part in ipairs(self.parts) do
    out[i] = type(part) == "string" and part or as_text(part:eval(env or {}))
  end
  return concat(out)
end

-- text -> a template {paths=, :render(env)}, or nil and an error naming
-- the column in text.
function M.template(text)
  if type(text) ~= "string" then return nil, "expression error at column 1: a template must be a string" end
  local parts, paths, pos = {}, {}, 1
  while true do
    local s, e = find(text, "{{", pos, true)
    if not s then
      if pos <= #text then parts[#parts + 1] = sub(text, pos) end
      break
    end
    if s > pos then parts[#parts + 1] = sub(text, pos, s - 1) end
    local close = find(text, "}}", e + 1, true)
    if not close then return nil, format("expression error at column %d: '{{' without its '}}'", s) end
    local c, err = M.compile(sub(text, e + 1, close - 1), e + 1)
    if not c then return nil, err end
    parts[#parts + 1] = c
    for _, p in ipairs(c.paths) do paths[#paths + 1] = p end
    pos = close + 2
  end
  local whole = #parts == 1 and type(parts[1]) == "table"
  return setmetatable({ text = text, parts = parts, paths = paths, whole = whole }, Template)
end

-- Whether text holds a {{ placeholder }}.
function M.has_placeholder(text)
  return type(text) == "string" and find(text, "{{", 1, true) ~= nil
end

return M
