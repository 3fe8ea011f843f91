-- tools/files — read, write, list and search files in the run's workspace
-- ($MOONHIVE_DATA/workspaces/RUN_ID). Paths are relative to it; `..`,
-- absolute paths and links that lead outside are refused (host/mod_workspace.c).
return tool{
  name = "files",
  description = "Work with files in your workspace. op: read (path), write (path, text), append (path, text), " ..
                "list (path, recursive), search (text, path), remove (path). Paths are relative.",
  params = {
    type = "object",
    properties = {
      op = { type = "string", enum = { "read", "write", "append", "list", "search", "remove" } },
      path = { type = "string", maxLength = 1024 },
      text = { type = "string" },
      recursive = { type = "boolean" },
    },
    required = { "op" },
  },
  timeout = 10000,
  run = function(args)
    if args.op ~= "list" and args.op ~= "search" and not args.path then error("'path' is required for " .. args.op, 0) end
    local res, err = builtin_tools.files(args)
    if not res then error(err, 0) end
    return res
  end,
}
