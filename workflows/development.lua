-- development — one task from assignment to tested code: the task is
-- assigned (its acceptance criteria from the input, or from a planner), a
-- developer implements it in the run's workspace, code_reviewer reviews it,
-- code_assembler makes it one runnable project, code_executor runs its
-- commands and qa_tester tests it against the criteria. A verdict that is not
-- a pass (review CHANGES_REQUESTED, execution or QA FAILED) sends the
-- findings back to the developer for another round, at most max_rounds.
--
--   moonhive run workflows/development.lua --input '{"task": "A CLI that counts words", "max_rounds": 2}'
--
-- Input: a string (the task) or {task = "..." | {id, title, description,
-- acceptance, role}, acceptance = {...}, context = "architecture, brief...",
-- developer = "fullstack_developer", max_rounds = 3, assign = true}.
-- Output: {status = "succeeded" | "changes_requested" | "failed", ok, rounds,
-- max_rounds, stopped_at, reason, assignment, history = {{round, review,
-- execution, qa}}, verdicts, steps, artifacts = {assignment, code, review,
-- assembly, execution, qa}}.
local handoff = require "handoff"

local DEVELOPERS = { fullstack_developer = true, coder = true }
local MAX_ROUNDS = 10

local function options(input)
  if type(input) == "string" then input = { task = input } end
  if type(input) ~= "table" then error('development: the input must be the task, or {"task": "..."}', 0) end
  local task = input.task
  if type(task) == "string" then task = { title = task } end
  if type(task) ~= "table" or type(task.title or task.description) ~= "string" then
    error('development: the input needs a task: {"task": "..."} or {"task": {"id": "T1", "title": "..."}}', 0)
  end
  local rounds = input.max_rounds or 3
  if math.type(rounds) ~= "integer" or rounds < 1 or rounds > MAX_ROUNDS then
    error(("development: 'max_rounds' must be a whole number from 1 to %d"):format(MAX_ROUNDS), 0)
  end
  local dev = input.developer or (DEVELOPERS[task.role] and task.role) or nil
  if dev ~= nil and (type(dev) ~= "string" or not dev:match("^[%a_][%w_%-]*$")) then
    error("development: 'developer' must be an agent's name", 0)
  end
  local acceptance = handoff.list(input.acceptance)
  if #acceptance == 0 then acceptance = handoff.list(task.acceptance) end
  local id = (type(task.id) == "string" or math.type(task.id) == "integer") and (task.id .. ": ") or ""
  return { task = task, title = id .. (task.title or task.description),
           description = task.title and task.description or nil, acceptance = acceptance, developer = dev,
           context = type(input.context) == "string" and input.context or nil, max_rounds = rounds,
           assign = input.assign ~= false }
end

local function is_plan(v) return type(v) == "table" and type(v.steps) == "table" and #v.steps > 0 end

-- Task assignment: acceptance criteria and the developer, from the input or
-- from the planner's plan for the task.
local function assign(wf, rec, opts)
  local a = { title = opts.title, acceptance = opts.acceptance, developer = opts.developer, source = "input" }
  if #a.acceptance == 0 and opts.assign then
    local text = wf:call("planner", handoff.prompt(
      "Plan this one development task: the steps to implement, review and test it, the implementation assigned "
      .. "to fullstack_developer or coder, and each step's done_when a checkable acceptance criterion.",
      { { "Task", { opts.title, opts.description or "" } }, { "Context", opts.context } }))
    handoff.keep(rec, "assignment", text)
    local plan = handoff.json(text, is_plan)
    if plan then
      a.source, a.acceptance = "planner", {}
      for _, s in ipairs(plan.steps) do
        if type(s) == "table" then
          if type(s.done_when) == "string" then a.acceptance[#a.acceptance + 1] = s.done_when end
          if not a.developer and DEVELOPERS[s.role] then a.developer = s.role end
        end
      end
    else
      a.source = "task"
    end
  end
  a.developer = a.developer or "fullstack_developer"
  return a
end

local function task_parts(opts, a)
  return { { "Task", { opts.title, opts.description or "" } }, { "Acceptance criteria", a.acceptance } }
end

local function with(parts, more)
  local out = {}
  for _, p in ipairs(parts) do out[#out + 1] = p end
  for _, p in ipairs(more) do out[#out + 1] = p end
  return out
end

local FIXER = { review = "code_reviewer", execution = "code_executor", qa = "qa_tester" }

-- The gates after the developer, in order: review, then assembly and
-- execution, then QA. Returns nil when every gate passed, else the gate
-- that did not pass, its report and why.
local function gates(wf, rec, h, task, round, code)
  local review = wf:call("code_reviewer", handoff.prompt(
    "Review the developer's change for this task; the code is in the workspace.",
    with(task, { { ("Developer's report (round %d)"):format(round), code } })))
  local ok, word, detail = handoff.gate(rec, "review", review, { "APPROVED" })
  h.review = word
  if not ok then return "review", review, handoff.why("review", word, detail) end

  local assembly = wf:call("code_assembler", handoff.prompt(
    "Assemble the reviewed code in the workspace into one runnable project.",
    with(task, { { "Developer's report", code } })))
  handoff.keep(rec, "assembly", assembly)

  -- only the assembler's answer: its fenced Commands are what the executor runs
  local execution = wf:call("code_executor", handoff.prompt(
    "Run the assembled project's commands and report what happened.", { { "Assembly", assembly } }))
  ok, word, detail = handoff.gate(rec, "execution", execution, { "PASSED" })
  h.execution = word
  if not ok then return "execution", execution, handoff.why("execution", word, detail) end

  local qa = wf:call("qa_tester", handoff.prompt(
    "Test the project against the acceptance criteria.",
    with(task, { { "Assembly", assembly }, { "Execution", execution } })))
  ok, word, detail = handoff.gate(rec, "qa", qa, { "PASSED" })
  h.qa = word
  if not ok then return "qa", qa, handoff.why("qa", word, detail) end
end

return workflow{
  name = "development",
  description = "task assignment -> developer -> code review -> assembly -> execution -> QA, with a bounded fix loop",
  run = function(wf, input)
    local opts = options(input)
    local rec = handoff.record("development", { run_id = wf.id, rounds = 0, max_rounds = opts.max_rounds, history = {} })
    local a = assign(wf, rec, opts)
    rec.assignment = a
    local task = task_parts(opts, a)
    local feedback
    for round = 1, opts.max_rounds do
      local h = { round = round }
      rec.rounds, rec.history[round] = round, h
      local intro = "Implement this task in the workspace."
      if feedback then
        intro = ("Round %d of %d: fix every finding below, then report as before."):format(round, opts.max_rounds)
      end
      local code = wf:call(a.developer, handoff.prompt(intro, with(task, {
        { "Context", opts.context },
        { feedback and ("Findings to fix (from %s)"):format(feedback.from) or "Findings", feedback and feedback.text } })))
      handoff.keep(rec, "code", code)

      local gate, report, why = gates(wf, rec, h, task, round, code)
      if not gate then return handoff.finish(rec, "succeeded") end
      if round == opts.max_rounds then
        return handoff.finish(rec, gate == "review" and "changes_requested" or "failed", gate,
                              ("%s after round %d of %d"):format(why, round, opts.max_rounds))
      end
      feedback = { from = FIXER[gate], text = report }
    end
  end,
}
