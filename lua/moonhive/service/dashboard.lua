-- moonhive.service.dashboard — GET /: the dashboard, one self-contained page
-- (dashboard.html next to this file: inline CSS and JavaScript, no build
-- step). The page is read once, when the service loads. It is public: it
-- holds no data; its script calls the API with the key the person gives it.
-- Its Content-Security-Policy allows exactly the page's own inline script
-- and style (by their SHA-256), requests to this origin only, and no framing.

local crypto = require "crypto"
local workspace = require "workspace"

local _M = {}

local PAGE = "moonhive/service/dashboard.html"
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  return (s:gsub("..?.?", function(c)
    local a, b, d = c:byte(1, 3)
    local n = a * 65536 + (b or 0) * 256 + (d or 0)
    local out = {}
    for i = 1, 4 do
      local k = (n >> (6 * (4 - i))) & 63
      out[i] = B64:sub(k + 1, k + 1)
    end
    if not b then out[3], out[4] = "=", "=" elseif not d then out[4] = "=" end
    return table.concat(out)
  end))
end

-- 'sha256-...' sources for every inline <tag>...</tag> of the page.
local function hashes(html, tag)
  local out = {}
  for body in html:gmatch("<" .. tag .. ">(.-)</" .. tag .. ">") do
    out[#out + 1] = ("'sha256-%s'"):format(base64(crypto.sha256(body, true)))
  end
  return table.concat(out, " ")
end

-- The page's text, or nil and why it could not be read.
local function read_page()
  local ws, err = workspace.open(host.runtime_dir())
  if not ws then return nil, err end
  local html, rerr = ws:read(PAGE)
  ws:close()
  return html, rerr
end

-- Registers GET / on svc (moonhive.service).
function _M.register(svc)
  local html, err = read_page()
  if not html then
    svc.router:add("GET", "/", function()
      return svc.error(500, ("the dashboard page could not be read (%s); reinstall moonhive"):format(err))
    end, "public")
    return
  end
  local headers = {
    ["Content-Type"] = "text/html; charset=utf-8",
    ["Content-Security-Policy"] = ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; "
      .. "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
      :format(hashes(html, "script"), hashes(html, "style")),
    ["X-Frame-Options"] = "DENY",
    ["X-Content-Type-Options"] = "nosniff",
    ["Referrer-Policy"] = "no-referrer",
    ["Cache-Control"] = "no-store",
  }
  svc.router:add("GET", "/", function() return 200, headers, html end, "public")
end

return _M
