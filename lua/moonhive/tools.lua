-- moonhive.tools — the privileged halves of the built-in agent tools
-- (stdlib/tools/files.lua, run_code.lua, http_fetch.lua), called through
-- the bridge (host/mod_builtin_tools.c) as fn(request, emit, caller).
--
-- files and run_code work in the workspace of the caller's recorded run:
-- $MOONHIVE_DATA/workspaces/RUN_ID (the `workspace` native confines every
-- path to it). http_fetch reaches only hosts in the allowlist: moonhive.lua's
-- `http_allow = {"api.example.com", "*.wikipedia.org"}` plus
-- MOONHIVE_HTTP_ALLOW (comma-separated); nothing is allowed by default.

local host = require "host"
local workspace = require "workspace"
local proc = require "proc"

local _M = {}

local MAX_FETCH = 256 * 1024

-- run id -> workspace, one per run and process (so its max_total counts
-- the whole run); at most MAX_OPEN open at once
local open_workspaces, n_open, MAX_OPEN = {}, 0, 256

local function workspace_of(caller, what)
  local id = caller.run_id
  if not id then return nil, what .. ": only agents in a recorded run have a workspace" end
  local ws = open_workspaces[id]
  if ws then return ws end
  local w, err = workspace.open(host.data_dir() .. "/workspaces/" .. id, { create = true })
  if not w then return nil, what .. ": " .. tostring(err) end
  if n_open >= MAX_OPEN then
    for _, old in pairs(open_workspaces) do old:close() end
    open_workspaces, n_open = {}, 0
  end
  open_workspaces[id], n_open = w, n_open + 1
  return w
end

function _M.files(req, _, caller)
  local ws, err = workspace_of(caller, "files")
  if not ws then return nil, err end
  local op, path = req.op, req.path
  if op == "read" then
    local text, e = ws:read(path)
    if not text then return nil, e end
    return { text = text }
  elseif op == "write" or op == "append" then
    if type(req.text) ~= "string" then return nil, "files: 'text' must be a string" end
    local ok, e = ws:write(path, req.text, { append = op == "append", mkdir = true })
    if not ok then return nil, e end
    return { written = #req.text, path = path }
  elseif op == "list" then
    local entries, cut = ws:list(path or ".", { recursive = req.recursive == true, max = 1000 })
    if not entries then return nil, cut end
    return { entries = entries, cut = cut or nil }
  elseif op == "search" then
    if type(req.text) ~= "string" or req.text == "" then return nil, "files: search needs 'text'" end
    local matches, cut = ws:search(req.text, { path = path or ".", max = 100 })
    if not matches then return nil, cut end
    return { matches = matches, cut = cut or nil }
  elseif op == "remove" then
    local ok, e = ws:remove(path)
    if not ok then return nil, e end
    return { removed = path }
  end
  return nil, "files: 'op' must be read, write, append, list, search or remove"
end

local interpreters = {
  python3 = function(code) return { "python3", "-I", "-c", code } end,
  lua = function(code) return { "lua5.4", "-e", code } end,
  sh = function(code) return { "sh", "-c", code } end,
}

function _M.run_code(req, _, caller)
  local argv_of = interpreters[req.language]
  if not argv_of then return nil, "run_code: 'language' must be python3, lua or sh" end
  if type(req.code) ~= "string" or req.code == "" then return nil, "run_code: 'code' must be a non-empty string" end
  local ws, err = workspace_of(caller, "run_code")
  if not ws then return nil, err end
  local timeout = math.floor(math.max(100, math.min(tonumber(req.timeout) or 10000, 60000)))
  local res, e = proc.run{ argv = argv_of(req.code), cwd = ws:root(), timeout = timeout,
                           stdin = type(req.stdin) == "string" and req.stdin or nil,
                           output_limit = 64 * 1024 }
  if not res then return nil, e end
  return { exit_code = res.status, signal = res.signal, stdout = res.stdout, stderr = res.stderr,
           timed_out = res.timed_out or nil, truncated = res.truncated or nil,
           network_isolated = res.network_isolated, duration_ms = math.floor(res.duration_ms + 0.5) }
end

local allow_list

local function allowed_hosts()
  if allow_list then return allow_list end
  allow_list = {}
  local c = host.config() or {}
  for _, h in ipairs(type(c.http_allow) == "table" and c.http_allow or {}) do
    if type(h) == "string" then allow_list[#allow_list + 1] = h:lower() end
  end
  for h in (host.env("MOONHIVE_HTTP_ALLOW") or ""):gmatch("[^,%s]+") do allow_list[#allow_list + 1] = h:lower() end
  return allow_list
end

local function host_allowed(name)
  name = name:lower()
  for _, pattern in ipairs(allowed_hosts()) do
    if pattern == name then return true end
    if pattern:sub(1, 2) == "*." and (name:sub(-(#pattern - 1)) == pattern:sub(2)) then return true end
  end
  return false
end

function _M.http_fetch(req)
  local url = req.url
  if type(url) ~= "string" then return nil, "http_fetch: 'url' must be a string" end
  local scheme, name = url:match("^(https?)://([^/:?#@]+)")
  if not scheme then return nil, "http_fetch: only http:// and https:// URLs (without user info)" end
  if not host_allowed(name) then
    return nil, ("http_fetch: host '%s' is not allowed (the project's http_allow or MOONHIVE_HTTP_ALLOW)"):format(name)
  end
  local method = type(req.method) == "string" and req.method:upper() or "GET"
  if method ~= "GET" and method ~= "POST" and method ~= "HEAD" then return nil, "http_fetch: method must be GET, POST or HEAD" end
  local res, err = http.request{ url = url, method = method, body = type(req.body) == "string" and req.body or nil,
                                 headers = type(req.headers) == "table" and req.headers or nil,
                                 timeout = 20000, follow_redirects = false }
  if not res then return nil, "http_fetch: " .. tostring(err) end
  local body, truncated = res.body or "", nil
  if #body > MAX_FETCH then body, truncated = body:sub(1, MAX_FETCH), true end
  return { status = res.status, content_type = res.headers and res.headers["content-type"], body = body,
           truncated = truncated }
end

return _M
