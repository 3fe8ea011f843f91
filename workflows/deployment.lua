-- deployment — from code to a watched release: the project's files are put
-- in the run's workspace, code_assembler makes them one runnable project,
-- the environment is set up (deploy/environment.json written, the toolchain
-- checked with a command), a person approves when the input asks for it
-- (wf:wait_signal "approve"), deployer releases it, validator checks the
-- release and monitor checks its health. A verdict that is not a pass stops
-- the pipeline there.
--
--   moonhive run workflows/deployment.lua --input '{"project": "...", "environment": {"name": "staging",
--     "url": "https://staging.example.com", "health": "/health"}, "approval": true}'
--   moonhive runs signal RUN_ID approve '{"approved": true, "by": "ann"}'
--
-- Input: a string (what to deploy) or {project=, files = {path = text},
-- environment = {name=, url=, health=, ...}, approval = false | true |
-- {timeout = ms}, setup = "python3 --version", requirements = {...}}.
-- Output: {status = "succeeded" | "degraded" | "rejected" | "failed", ok,
-- stopped_at, reason, environment, approval, files, verdicts = {deploy,
-- validation, monitoring}, steps, artifacts = {assembly, environment,
-- deploy, validation, monitoring}}.
local handoff = require "handoff"

local MAX_FILES = 200

local function options(input)
  if type(input) == "string" then input = { project = input } end
  if type(input) ~= "table" then error('deployment: the input must say what to deploy, or be {"project": "..."}', 0) end
  local project = input.project
  if project ~= nil and type(project) ~= "string" then error("deployment: 'project' must be text", 0) end
  local paths = {}
  if input.files ~= nil then
    if type(input.files) ~= "table" then error("deployment: 'files' must be an object {path: text}", 0) end
    for path, text in pairs(input.files) do
      if type(path) ~= "string" or type(text) ~= "string" then error("deployment: 'files' must map paths to text", 0) end
      paths[#paths + 1] = path
    end
    table.sort(paths)  -- the same order on every replay
    if #paths > MAX_FILES then error(("deployment: at most %d files"):format(MAX_FILES), 0) end
  end
  if not project and #paths == 0 then error("deployment: give the 'project' to deploy, its 'files', or both", 0) end
  local env = input.environment or {}
  if type(env) ~= "table" then error("deployment: 'environment' must be an object {name=, url=, health=}", 0) end
  local approval = input.approval
  if approval == true then approval = {} end
  if approval ~= nil and approval ~= false and (type(approval) ~= "table"
      or approval.timeout ~= nil and (type(approval.timeout) ~= "number" or approval.timeout <= 0)) then
    error("deployment: 'approval' must be true, false or {timeout = ms}", 0)
  end
  local setup = input.setup or "python3 --version"
  if type(setup) ~= "string" or not setup:find("%S") then error("deployment: 'setup' must be a shell command", 0) end
  return { project = project, files = input.files or {}, paths = paths, env = env, approval = approval or nil,
           setup = setup, requirements = handoff.list(input.requirements) }
end

-- Waits for the signal "approve": its payload (true when it has none), or
-- nil and why not (refused, or the timeout).
local function approve(wf, approval)
  local payload, err = wf:wait_signal("approve", { timeout = approval.timeout })
  if err == "timeout" then return nil, ("no approval within %d ms"):format(math.floor(approval.timeout)) end
  if payload == nil then return true end
  if payload == false or type(payload) == "table" and payload.approved == false then
    return nil, "approval refused" .. (type(payload) == "table" and type(payload.reason) == "string"
                                        and (": " .. payload.reason) or "")
  end
  return payload
end

return workflow{
  name = "deployment",
  description = "assembly -> environment setup -> deploy -> validation -> monitoring",
  run = function(wf, input)
    local opts = options(input)
    local env_text = json.encode(opts.env)
    local rec = handoff.record("deployment", { run_id = wf.id, environment = opts.env, files = #opts.paths })

    for _, path in ipairs(opts.paths) do
      wf:tool("files", { op = "write", path = path, text = opts.files[path] })
    end

    local assembly = wf:call("code_assembler", handoff.prompt(
      "Assemble the project in the workspace for release: one entry point, README.md, MANIFEST.md and the exact "
      .. "commands to test and run it.", { { "Project", opts.project }, { "Files", opts.paths } }))
    handoff.keep(rec, "assembly", assembly)

    -- environment setup: the target's description where the deployer reads it, and a toolchain check
    wf:tool("files", { op = "write", path = "deploy/environment.json", text = env_text .. "\n" })
    local check = wf:tool("run_code", { language = "sh", code = opts.setup, timeout = 30000 })
    handoff.keep(rec, "environment", { command = opts.setup, exit_code = check.exit_code, stdout = check.stdout,
                                       stderr = check.stderr, timed_out = check.timed_out })
    if check.exit_code ~= 0 or check.timed_out then
      return handoff.finish(rec, "failed", "environment_setup",
                            ("the setup command '%s' exited with %s"):format(opts.setup, tostring(check.exit_code)))
    end

    if opts.approval then
      local answer, why = approve(wf, opts.approval)
      if not answer then return handoff.finish(rec, "rejected", "approval", why) end
      rec.approval = answer
    end

    local deploy = wf:call("deployer", handoff.prompt(
      ("Release the assembled project to the %s environment."):format(type(opts.env.name) == "string" and opts.env.name or "target"),
      { { "Environment (deploy/environment.json)", env_text },
        { "Environment check", ("$ %s\nexit %s\n%s"):format(opts.setup, tostring(check.exit_code), check.stdout or "") },
        { "Assembly", assembly } }))
    local stop = handoff.check(rec, "deploy", deploy, { "DEPLOYED" })
    if stop then return stop end

    local validation = wf:call("validator", handoff.prompt(
      "Validate this release against its requirements, one by one, with evidence.",
      { { "Requirements", #opts.requirements > 0 and opts.requirements
            or "The deployer's Handoff below, the assembly's commands and the environment." },
        { "Environment", env_text }, { "Deployment report", deploy } }))
    stop = handoff.check(rec, "validation", validation, { "PASSED" })
    if stop then return stop end

    local monitoring = wf:call("monitor", handoff.prompt(
      "Check the health of the service just released and report.",
      { { "Environment (its url and health endpoint)", env_text },
        { "From the deployer", handoff.section(deploy, "Handoff") or deploy },
        { "From the validator", handoff.section(validation, "Handoff") } }))
    return handoff.check(rec, "monitoring", monitoring, { "HEALTHY" }, { DEGRADED = "degraded" })
      or handoff.finish(rec, "succeeded")
  end,
}
