-- tools/http_fetch — fetch a URL from an allowed host (the project's
-- http_allow in moonhive.lua, or MOONHIVE_HTTP_ALLOW). Bodies are cut at 256 KiB.
return tool{
  name = "http_fetch",
  description = "Fetch a web page or API over HTTP(S). Only some hosts are allowed.",
  params = {
    type = "object",
    properties = {
      url = { type = "string", minLength = 8, maxLength = 4096 },
      method = { type = "string", enum = { "GET", "POST", "HEAD" } },
      body = { type = "string" },
    },
    required = { "url" },
  },
  timeout = 30000,
  run = function(args)
    local res, err = builtin_tools.http_fetch(args)
    if not res then error(err, 0) end
    return res
  end,
}
