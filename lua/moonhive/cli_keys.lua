-- moonhive.cli_keys — `moonhive keys create|list|revoke` (host/cli_runtime.c):
-- takes the command's arguments, returns the text for stdout or nil and a
-- message.

local cjson = require "cjson"
local keys = require "moonhive.service.keys"

local _M = {}

local function when(t) return t and os.date("!%Y-%m-%d %H:%M:%S", math.floor(t)) or "-" end

function _M.keys(args)
  local sub = args[1] or "list"
  local opts, words, i = {}, {}, 2
  while i <= #args do
    local a = args[i]
    if a == "--role" or a == "--name" then
      if not args[i + 1] then return nil, a .. " needs a value" end
      opts[a:sub(3)] = args[i + 1]
      i = i + 1
    elseif a == "--json" then opts.json = true
    elseif a:sub(1, 2) == "--" then return nil, ("unknown option '%s' (see moonhive keys --help)"):format(a)
    else words[#words + 1] = a end
    i = i + 1
  end
  if sub == "create" then
    if not opts.role then return nil, "keys create needs --role admin|operator|viewer" end
    local key, row = keys.create(opts.role, opts.name)
    if not key then return nil, row end
    return key .. "\n"
  elseif sub == "list" then
    local rows, err = keys.list()
    if not rows then return nil, err end
    if opts.json then return cjson.encode(rows) .. "\n" end
    if #rows == 0 then return "no API keys yet (moonhive keys create --role admin)\n" end
    local out = { ("%-10s %-9s %-20s %-19s %-19s %s"):format("ID", "ROLE", "NAME", "CREATED (UTC)", "LAST USED", "REVOKED") }
    for _, r in ipairs(rows) do
      out[#out + 1] = ("%-10s %-9s %-20s %-19s %-19s %s"):format(r.id, r.role, (r.name or "-"):sub(1, 20),
        when(r.created_at), when(r.last_used_at), when(r.revoked_at))
    end
    return table.concat(out, "\n") .. "\n"
  elseif sub == "revoke" then
    if not words[1] then return nil, "keys revoke needs a key id (see moonhive keys list)" end
    local ok, err = keys.revoke(words[1])
    if not ok then return nil, err end
    return ("revoked %s\n"):format(words[1])
  end
  return nil, ("unknown subcommand '%s' (create, list or revoke)"):format(sub)
end

return _M
