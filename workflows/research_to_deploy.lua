-- research_to_deploy — from a question to a running, watched program:
-- researcher finds out what is true and writes a handoff for the coder,
-- coder writes and runs the program in the run's workspace, validator checks
-- it against the research's requirements, deployer releases it and monitor
-- checks its health. A verdict that is not a pass (validator FAILED,
-- deployer FAILED, monitor DOWN) stops the pipeline there.
--
--   moonhive run --deadline 30m workflows/research_to_deploy.lua --input '{"question": "...",
--     "environment": {"name": "prod", "url": "https://tool.example.com", "health": "/health"}}'
--
-- Input: a string (the question) or {question=, requirements = {...},
-- environment = {name=, url=, health=, ...}}.
-- Output: {status = "succeeded" | "degraded" | "failed", ok, stopped_at,
-- reason, verdicts = {validation, deploy, monitoring}, steps, artifacts =
-- {research, code, validation, deploy, monitoring}}.
local handoff = require "handoff"

local function options(input)
  if type(input) == "string" then input = { question = input } end
  if type(input) ~= "table" or type(input.question) ~= "string" or not input.question:find("%S") then
    error('research_to_deploy: the input must be the question, or {"question": "..."}', 0)
  end
  local env = input.environment or {}
  if type(env) ~= "table" then error("research_to_deploy: 'environment' must be an object {name=, url=, health=}", 0) end
  return { question = input.question, requirements = handoff.list(input.requirements), env = env }
end

return workflow{
  name = "research_to_deploy",
  description = "researcher -> coder -> validator -> deployer -> monitor",
  run = function(wf, input)
    local opts = options(input)
    local env_text = json.encode(opts.env)
    local rec = handoff.record("research_to_deploy", { run_id = wf.id, question = opts.question, environment = opts.env })

    local research = wf:call("researcher", handoff.prompt(
      "Research this question; end with a Handoff for coder of numbered, testable requirements.",
      { { "Question", opts.question }, { "Requirements already known", opts.requirements } }))
    handoff.keep(rec, "research", research)

    local code = wf:call("coder", handoff.prompt(
      "Write and run the program this research calls for, in the workspace.",
      { { "Specification (the researcher's handoff)", handoff.section(research, "Handoff for coder") or research },
        { "Further requirements", opts.requirements }, { "Findings", handoff.section(research, "Findings") } }))
    handoff.keep(rec, "code", code)

    local validation = wf:call("validator", handoff.prompt(
      "Validate the coder's program in the workspace against the requirements, one by one, with evidence.",
      { { "Requirements", { handoff.section(research, "Handoff for coder") or "", table.concat(opts.requirements, "\n") } },
        { "The coder's report", code } }))
    local stop = handoff.check(rec, "validation", validation, { "PASSED" })
    if stop then return stop end

    local deploy = wf:call("deployer", handoff.prompt(
      ("Release the validated program to the %s environment."):format(
        type(opts.env.name) == "string" and opts.env.name or "target"),
      { { "Environment", env_text }, { "The coder's report", code },
        { "From the validator", handoff.section(validation, "Handoff") } }))
    stop = handoff.check(rec, "deploy", deploy, { "DEPLOYED" })
    if stop then return stop end

    local monitoring = wf:call("monitor", handoff.prompt(
      "Check the health of the service just released and report.",
      { { "Environment (its url and health endpoint)", env_text },
        { "From the deployer", handoff.section(deploy, "Handoff") or deploy } }))
    return handoff.check(rec, "monitoring", monitoring, { "HEALTHY" }, { DEGRADED = "degraded" })
      or handoff.finish(rec, "succeeded")
  end,
}
