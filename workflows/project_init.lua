-- project_init — from a request to a team with work: project_manager writes
-- the brief, solution_architect designs the system and its work breakdown,
-- planner allocates each task to a role (a JSON plan, checked here: known
-- ids, no cycles, waves of tasks that can run side by side), and the tasks
-- are distributed: each assigned role gets its task with the brief and the
-- architecture and answers with its work plan (wf:map, a few at a time).
--
--   moonhive run workflows/project_init.lua --input '{"request": "A todo app with sharing"}'
--
-- Input: a string (the request) or {request=, team = {roles tasks may go
-- to}, kickoff = true, concurrency = 4, max_tasks = 30}.
-- Output: {status, ok, stopped_at, reason, plan = {goal, source, tasks},
-- waves, by_role, assignments = {{id, title, role, depends_on, wave,
-- acceptance, kickoff}}, issues, steps, artifacts = {brief, architecture,
-- allocation, distribution}}.
local handoff = require "handoff"

local ROLES = { "project_manager", "solution_architect", "planner", "researcher", "designer", "fullstack_developer",
                "coder", "code_reviewer", "security_auditor", "code_assembler", "code_executor", "qa_tester",
                "validator", "analyst", "deployer", "monitor" }
local DEFAULT_ROLE = "fullstack_developer"

local function options(input)
  if type(input) == "string" then input = { request = input } end
  if type(input) ~= "table" or type(input.request) ~= "string" or not input.request:find("%S") then
    error('project_init: the input must be the request, or {"request": "..."}', 0)
  end
  local team = input.team and handoff.list(input.team) or ROLES
  if #team == 0 then error("project_init: 'team' must list at least one role", 0) end
  local conc, max = input.concurrency or 4, input.max_tasks or 30
  if math.type(conc) ~= "integer" or conc < 1 then error("project_init: 'concurrency' must be a whole number >= 1", 0) end
  if math.type(max) ~= "integer" or max < 1 then error("project_init: 'max_tasks' must be a whole number >= 1", 0) end
  return { request = input.request, team = team, kickoff = input.kickoff ~= false, concurrency = conc, max_tasks = max }
end

local function has_list(key)
  return function(v) return type(v) == "table" and type(v[key]) == "table" and #v[key] > 0 end
end

-- The tasks of the planner's plan ("steps"), else of the architect's work
-- breakdown ("tasks"): list, source | nil.
local function task_list(plan_text, architecture)
  local plan = handoff.json(plan_text, has_list("steps"))
  if plan then return plan.steps, "planner", plan.goal end
  local wb = handoff.json(architecture, has_list("tasks"))
  if wb then return wb.tasks, "architect" end
  return nil
end

-- Normalised tasks: ids, titles, a role of the team, known dependencies.
-- Returns tasks, issues | nil, message.
local function normalise(raw, team, max)
  if #raw > max then return nil, ("the plan has %d tasks, more than max_tasks (%d)"):format(#raw, max) end
  local in_team, tasks, by_id, issues = {}, {}, {}, {}
  for _, r in ipairs(team) do in_team[r] = true end
  local fallback = in_team[DEFAULT_ROLE] and DEFAULT_ROLE or team[1]
  for i, t in ipairs(raw) do
    if type(t) ~= "table" then return nil, ("task %d is not an object"):format(i) end
    local id = (type(t.id) == "string" or type(t.id) == "number") and tostring(t.id) or ("T" .. i)
    if by_id[id] then return nil, ("two tasks have the id %s"):format(id) end
    local title = t.title or t.name
    if type(title) ~= "string" or not title:find("%S") then return nil, ("task %s has no title"):format(id) end
    local role = t.role
    if not in_team[role] then
      issues[#issues + 1] = ("%s: role %s is not in the team; given to %s"):format(id, tostring(role), fallback)
      role = fallback
    end
    local accept = handoff.list(t.acceptance)
    if #accept == 0 then accept = handoff.list(t.done_when) end
    local task = { id = id, title = title, role = role, depends_on = handoff.list(t.depends_on), acceptance = accept,
                   size = type(t.size) == "string" and t.size or nil,
                   input = type(t.input) == "string" and t.input or nil,
                   output = type(t.output) == "string" and t.output or nil }
    tasks[i], by_id[id] = task, task
  end
  for _, t in ipairs(tasks) do
    for _, d in ipairs(t.depends_on) do
      if not by_id[d] then return nil, ("task %s depends on %s, which is not in the plan"):format(t.id, d) end
      if d == t.id then return nil, ("task %s depends on itself"):format(t.id) end
    end
  end
  return tasks, issues
end

-- Waves: wave 1 has no dependencies, wave n depends only on earlier waves.
-- Sets task.wave; returns the waves (lists of ids) | nil, message on a cycle.
local function waves_of(tasks)
  local waves, done, left = {}, {}, #tasks
  while left > 0 do
    local wave = {}
    for _, t in ipairs(tasks) do
      if not t.wave then
        local ready = true
        for _, d in ipairs(t.depends_on) do
          if not done[d] then ready = false break end
        end
        if ready then wave[#wave + 1] = t end
      end
    end
    if #wave == 0 then
      local stuck = {}
      for _, t in ipairs(tasks) do if not t.wave then stuck[#stuck + 1] = t.id end end
      return nil, "the plan's dependencies form a cycle among " .. table.concat(stuck, ", ")
    end
    local ids = {}
    for i, t in ipairs(wave) do
      t.wave, ids[i] = #waves + 1, t.id
      done[t.id] = true
    end
    waves[#waves + 1], left = ids, left - #wave
  end
  return waves
end

local function kickoff_prompt(t, opts, brief, architecture)
  return handoff.prompt(
    ("You are assigned task %s of a new project. Do not do the task yet: answer with your work plan for it "
     .. "(approach, the files or outputs you will produce, what you need from the tasks it depends on, risks and "
     .. "questions), in at most 300 words."):format(t.id),
    { { "Task " .. t.id, { t.title, t.input or "", t.output and ("Hands on: " .. t.output) or "" } },
      { "Depends on", #t.depends_on > 0 and table.concat(t.depends_on, ", ") or "nothing: it can start now" },
      { "Acceptance criteria", t.acceptance },
      { "Request", opts.request },
      { "Project brief", handoff.section(brief, "Requirements") or brief },
      { "Architecture", { handoff.section(architecture, "Interfaces") or "", handoff.section(architecture, "File layout") or "" } } })
end

return workflow{
  name = "project_init",
  description = "request -> project manager -> solution architect -> resource allocation -> task distribution",
  run = function(wf, input)
    local opts = options(input)
    local rec = handoff.record("project_init", { request = opts.request, run_id = wf.id })

    local brief = wf:call("project_manager", handoff.prompt(
      "Write the project brief for this request.", { { "Request", opts.request } }))
    handoff.keep(rec, "brief", brief)

    local architecture = wf:call("solution_architect", handoff.prompt(
      "Design the system for this project brief; end with the work breakdown as JSON.",
      { { "Project brief", brief }, { "Original request", opts.request } }))
    handoff.keep(rec, "architecture", architecture)

    -- resource allocation: the planner gives each task of the breakdown a role
    local plan_text = wf:call("planner", handoff.prompt(
      "Allocate the work breakdown of this architecture to the team: one plan step per task, keeping the task's id "
      .. "and dependencies, each assigned to exactly one role of the team, with its acceptance criteria as done_when.",
      { { "Team (roles you may assign)", table.concat(opts.team, ", ") },
        { "Architecture", architecture }, { "Project brief", handoff.section(brief, "Acceptance criteria") or brief } }))
    handoff.keep(rec, "allocation", plan_text)
    local raw, source, goal = task_list(plan_text, architecture)
    if not raw then
      return handoff.finish(rec, "failed", "resource_allocation",
                            "neither the planner's answer nor the architect's work breakdown holds a JSON list of tasks")
    end
    local tasks, issues = normalise(raw, opts.team, opts.max_tasks)
    if not tasks then return handoff.finish(rec, "failed", "resource_allocation", issues) end
    local waves, cycle = waves_of(tasks)
    if not waves then return handoff.finish(rec, "failed", "resource_allocation", cycle) end
    rec.plan, rec.waves, rec.issues = { goal = goal, source = source, tasks = tasks }, waves, issues
    rec.by_role = {}
    local roles = 0
    for _, t in ipairs(tasks) do
      if not rec.by_role[t.role] then rec.by_role[t.role], roles = {}, roles + 1 end
      table.insert(rec.by_role[t.role], t.id)
    end

    -- task distribution: every task goes to its role, which answers with its plan
    local notes = {}
    if opts.kickoff then
      notes = wf:map(tasks, function(t)
        return wf:call(t.role, kickoff_prompt(t, opts, brief, architecture))
      end, { concurrency = opts.concurrency })
    end
    rec.assignments = {}
    for i, t in ipairs(tasks) do
      rec.assignments[i] = { id = t.id, title = t.title, role = t.role, depends_on = t.depends_on, wave = t.wave,
                             acceptance = t.acceptance, kickoff = notes[i] }
    end
    handoff.keep(rec, "distribution", ("%d tasks to %d roles in %d waves"):format(#tasks, roles, #waves))
    return handoff.finish(rec, "succeeded")
  end,
}
