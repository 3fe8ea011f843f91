-- tools/run_code — runs python3, lua or sh code in a subprocess: CPU, memory,
-- file-size and process limits, a timeout, an empty environment, the run's
-- workspace as working directory, no network where the OS allows it.
return tool{
  name = "run_code",
  description = "Run a short program and get its exit code, stdout and stderr. " ..
                "language: python3, lua or sh. The working directory is your workspace; there is no network.",
  params = {
    type = "object",
    properties = {
      language = { type = "string", enum = { "python3", "lua", "sh" } },
      code = { type = "string", minLength = 1, maxLength = 100000 },
      stdin = { type = "string" },
      timeout = { type = "integer", minimum = 100, maximum = 60000, description = "milliseconds" },
    },
    required = { "language", "code" },
  },
  timeout = 65000,
  run = function(args)
    local res, err = builtin_tools.run_code(args)
    if not res then error(err, 0) end
    return res
  end,
}
