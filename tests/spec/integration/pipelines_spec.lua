-- The ready-made pipelines (workflows/*.lua) end to end: each run by
-- `moonhive run workflows/NAME.lua` from a project folder that has neither
-- workflows/ nor agents/ (so the shipped ones are found), against a scripted
-- mock model (MOONHIVE_MOCK_SCRIPT, replies routed by agent) whose request log
-- (MOONHIVE_MOCK_LOG) shows which agents ran, in which order, and what each
-- was handed. Covers the order of the roles, the handoffs, development's
-- bounded review-and-fix loop, gates that stop a pipeline, the approval
-- signal of deployment, and pipelines killed with SIGKILL and finished by
-- `moonhive runs resume` without running their journaled steps again.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")
local cjson = require "cjson"

local function json_block(v) return "```json\n" .. cjson.encode(v) .. "\n```" end

describe("ready-made pipelines", function()
  local project, data, n = nil, nil, 0

  -- A scripted model for one process: its script file and the path of its request log.
  local function model(replies)
    n = n + 1
    local script, log = ("%s/script-%d.json"):format(project, n), ("%s/requests-%d.jsonl"):format(project, n)
    H.write(script, cjson.encode(replies))
    return { MOONHIVE_DATA = data, MOONHIVE_MOCK_SCRIPT = script, MOONHIVE_MOCK_LOG = log,
             OPENAI_API_KEY = false, ANTHROPIC_API_KEY = false, MOONHIVE_MODEL = false }, log
  end

  local function moonhive(args, env) return H.moonhive(args, { cwd = project, env = env or { MOONHIVE_DATA = data } }) end

  -- The requests a scripted model received, in order.
  local function requests(log)
    local out = {}
    for line in (H.read(log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
    return out
  end

  -- The first request of each agent run (no assistant turn yet): the steps, in order.
  local function steps(log)
    local out = {}
    for _, r in ipairs(requests(log)) do
      local first = true
      for _, m in ipairs(r.messages) do if m.role == "assistant" then first = false end end
      if first then out[#out + 1] = { agent = r.agent, prompt = r.messages[#r.messages].content } end
    end
    return out
  end

  local function agents(list)
    local out = {}
    for i, s in ipairs(list) do out[i] = s.agent end
    return out
  end

  local function has(text, ...)
    for _, want in ipairs({ ... }) do assert.matches(want, text, 1, true) end
  end

  -- `moonhive run --json workflows/NAME.lua --input INPUT` with scripted replies:
  -- the workflow's output, the agent steps the model saw, the whole report.
  local function pipeline(name, input, replies)
    local env, log = model(replies)
    local res = moonhive({ "run", "--json", "workflows/" .. name .. ".lua", "--input", cjson.encode(input) }, env)
    assert.equals(0, res.code, H.show(res))
    local report = cjson.decode(res.stdout)
    assert.equals("succeeded", report.status, H.show(res))
    return report.output, steps(log), report
  end

  local function show(id) return cjson.decode(H.ok(moonhive({ "runs", "show", id, "--json" }))) end

  -- Starts a pipeline in the background and waits until it waits for its approval.
  local function start_waiting(name, input, replies)
    local env, log = model(replies)
    local p = H.spawn({ "run", "workflows/" .. name .. ".lua", "--input", cjson.encode(input) }, { cwd = project, env = env })
    local id
    H.wait_until(function() id = p.stderr():match("run (%x+%-%x+) started") return id ~= nil end, 10000)
    assert.truthy(id, p.stderr())
    assert.is_true(H.wait_run_status(id, "waiting", { cwd = project, env = { MOONHIVE_DATA = data } }), p.stderr())
    return p, id, log
  end

  lazy_setup(function()
    project = H.tmpdir()
    data = project .. "/.moonhive"
    -- the pipelines' require "handoff" must find stdlib's, never a project's file
    H.write(project .. "/handoff.lua", 'error("the project\'s handoff.lua was loaded")')
  end)
  lazy_teardown(H.cleanup)

  it("run finds the shipped workflows/ and agents/ from any folder, a project's own file first", function()
    local dir = H.tmpdir()
    local env = { MOONHIVE_DATA = data, MOONHIVE_MODEL = "mock/default", OPENAI_API_KEY = false, ANTHROPIC_API_KEY = false }
    local res = H.moonhive({ "run", "agents/coder.lua", "hello there" }, { cwd = dir, env = env })
    assert.equals(0, res.code, H.show(res))
    assert.equals("mock: hello there\n", res.stdout)
    require("luv").fs_mkdir(dir .. "/workflows", 448)
    H.write(dir .. "/workflows/development.lua",
            'return workflow{name = "mine", run = function(wf, input) return "the project\'s own " .. input end}')
    res = H.moonhive({ "run", "workflows/development.lua", "x" }, { cwd = dir, env = env })
    assert.equals(0, res.code, H.show(res))
    assert.equals("the project's own x\n", res.stdout)
    res = H.moonhive({ "run", "workflows/deployment.lua", "--input", "{}" }, { cwd = dir, env = env })
    assert.matches("deployment: give the 'project' to deploy, its 'files', or both", H.fails(res), 1, true)
    assert.matches("cannot open workflows/nope.lua", H.fails(H.moonhive({ "run", "workflows/nope.lua" }, { cwd = dir, env = env })), 1, true)
  end)

  describe("project_init", function()
    local BRIEF = "# Project brief: Notes\n## Requirements\nR1. Save notes (must)\n## Acceptance criteria\n"
                  .. "AC1 (R1). Given a note, when saved, then it is listed.\n## Handoff\nKeep it small."
    local ARCH = "# Architecture: Notes\n## Interfaces\nPOST /notes {text} -> 201\n## File layout\napp.py\n"
                 .. "## Work breakdown\n"

    it("runs manager, architect, planner, then hands every task to its role with its context", function()
      local plan = { goal = "Ship notes", steps = {
        { id = "T1", title = "Store", role = "fullstack_developer", depends_on = {}, done_when = "notes persist" },
        { id = "T2", title = "API", role = "coder", depends_on = { "T1" }, done_when = "POST /notes answers 201" },
        { id = "T3", title = "Tests", role = "qa_tester", depends_on = { "T1" }, done_when = "suite green" },
        { id = "T4", title = "Docs", role = "wizard", depends_on = { "T2", "T3" }, done_when = "README explains" } } }
      local out, seen = pipeline("project_init",
        { request = "A notes service", team = { "fullstack_developer", "coder", "qa_tester" }, concurrency = 2 }, {
          { agent = "project_manager", content = BRIEF },
          { agent = "solution_architect", content = ARCH .. json_block({ tasks = { { id = "X1", title = "unused" } } }) },
          { agent = "planner", content = "## Goal\nNotes.\n" .. json_block(plan) },
          { agent = "fullstack_developer", when = "## Task T1\n", content = "plan for T1" },
          { agent = "coder", when = "## Task T2\n", content = "plan for T2" },
          { agent = "qa_tester", when = "## Task T3\n", content = "plan for T3" },
          { agent = "fullstack_developer", when = "## Task T4\n", content = "plan for T4" },
        })
      local order = agents(seen)
      assert.same({ "project_manager", "solution_architect", "planner" }, { order[1], order[2], order[3] })
      local kicked = { order[4], order[5], order[6], order[7] }
      table.sort(kicked)
      assert.same({ "coder", "fullstack_developer", "fullstack_developer", "qa_tester" }, kicked)
      assert.equals(7, #seen)
      -- what each was handed
      has(seen[1].prompt, "A notes service")
      has(seen[2].prompt, "R1. Save notes", "A notes service")
      has(seen[3].prompt, "POST /notes {text}", "fullstack_developer, coder, qa_tester", "AC1 (R1)")
      local t2
      for _, s in ipairs(seen) do if s.prompt:find("## Task T2\nAPI", 1, true) then t2 = s end end
      assert.equals("coder", t2.agent)
      has(t2.prompt, "POST /notes answers 201", "## Depends on\nT1", "POST /notes {text} -> 201", "R1. Save notes")
      assert.is_nil(t2.prompt:find("Task T4", 1, true))
      -- the plan, checked and laid out
      assert.same({ "succeeded", true }, { out.status, out.ok })
      assert.same({ "planner", "Ship notes" }, { out.plan.source, out.plan.goal })
      assert.same({ { "T1" }, { "T2", "T3" }, { "T4" } }, out.waves)
      assert.same({ fullstack_developer = { "T1", "T4" }, coder = { "T2" }, qa_tester = { "T3" } }, out.by_role)
      assert.same({ "T4: role wizard is not in the team; given to fullstack_developer" }, out.issues)
      for i, a in ipairs(out.assignments) do
        assert.equals("T" .. i, a.id)
        assert.equals("plan for T" .. i, a.kickoff)
      end
      assert.same({ id = "T2", title = "API", role = "coder", depends_on = { "T1" }, wave = 2,
                    acceptance = { "POST /notes answers 201" }, kickoff = "plan for T2" }, out.assignments[2])
      assert.equals(BRIEF, out.artifacts.brief)
      assert.equals("4 tasks to 3 roles in 3 waves", out.artifacts.distribution)
    end)

    it("falls back to the architect's breakdown, and stops on a plan it cannot execute", function()
      local tasks = { { id = "A", title = "Core", role = "coder", depends_on = {} },
                      { id = "B", title = "UI", role = "designer", depends_on = { "A" } } }
      local out, seen = pipeline("project_init", { request = "A notes service", kickoff = false }, {
        { agent = "project_manager", content = BRIEF },
        { agent = "solution_architect", content = ARCH .. json_block({ tasks = tasks }) },
        { agent = "planner", content = "I could not make a plan." },
      })
      assert.same({ "project_manager", "solution_architect", "planner" }, agents(seen))
      assert.same({ "succeeded", "architect" }, { out.status, out.plan.source })
      assert.same({ { "A" }, { "B" } }, out.waves)
      assert.is_nil(out.assignments[2].kickoff)
      assert.equals("designer", out.assignments[2].role)

      tasks[1].depends_on = { "B" }
      out, seen = pipeline("project_init", "A notes service", {
        { agent = "project_manager", content = BRIEF },
        { agent = "solution_architect", content = ARCH .. json_block({ tasks = tasks }) },
        { agent = "planner", content = "No JSON here." },
      })
      assert.equals(3, #seen) -- nobody was handed a task
      assert.same({ "failed", false, "resource_allocation" }, { out.status, out.ok, out.stopped_at })
      assert.equals("the plan's dependencies form a cycle among A, B", out.reason)
      assert.is_nil(out.assignments)

      out = pipeline("project_init", "A notes service", {
        { agent = "project_manager", content = "brief" },
        { agent = "solution_architect", content = "no breakdown" },
        { agent = "planner", content = "no plan" },
      })
      assert.same({ "failed", "resource_allocation" }, { out.status, out.stopped_at })
      assert.matches("holds a JSON list of tasks", out.reason, 1, true)
    end)
  end)

  describe("development", function()
    it("assigns, builds, reviews, fixes, assembles, runs the code for real and passes QA", function()
      local plan = { goal = "greeter", steps = {
        { id = "S1", title = "write app.py", role = "coder", depends_on = {}, done_when = "python3 app.py prints hello" },
        { id = "S2", title = "review", role = "code_reviewer", depends_on = { "S1" }, done_when = "review approved" } } }
      local write = function(text)
        return { agent = "coder", tool_calls = { { name = "files", arguments = { op = "write", path = "app.py", text = text } } } }
      end
      local out, seen = pipeline("development",
        { task = "A greeter: app.py prints hello", context = "Python 3, standard library only.", max_rounds = 3 }, {
          { agent = "planner", content = json_block(plan) },
          write("print('helo')\n"),
          { agent = "coder", content = "## Summary\nround one: app.py" },
          { agent = "code_reviewer",
            content = "## Findings\n1. [blocker] app.py:1 prints helo. Fix: print hello.\n## Verdict\nVERDICT: CHANGES_REQUESTED — 1" },
          write("print('hello from app')\n"),
          { agent = "coder", content = "## Summary\nround two: fixed the greeting" },
          { agent = "code_reviewer", content = "## Findings\nNone.\n**VERDICT: APPROVED**" },
          { agent = "code_assembler", content = "## Layout\napp.py\n## Commands\n```sh\npython3 app.py\n```\n## Handoff\nRun it." },
          { agent = "code_executor", content = "## Commands run\npython3 app.py: exit 0" },
          { agent = "qa_tester", content = "## Results\nAC1 pass\nVERDICT: PASSED" },
        })
      assert.same({ "planner", "coder", "code_reviewer", "coder", "code_reviewer", "code_assembler", "code_executor",
                    "qa_tester" }, agents(seen))
      has(seen[1].prompt, "A greeter: app.py prints hello", "Python 3, standard library only.")
      has(seen[2].prompt, "Implement this task", "python3 app.py prints hello", "Python 3, standard library only.")
      has(seen[3].prompt, "round one: app.py", "Developer's report (round 1)")
      has(seen[4].prompt, "Round 2 of 3", "Findings to fix (from code_reviewer)", "app.py:1 prints helo",
          "python3 app.py prints hello")
      has(seen[5].prompt, "round two: fixed the greeting", "Developer's report (round 2)")
      has(seen[6].prompt, "round two: fixed the greeting")
      -- the executor ran the assembler's command on the file the coder wrote in round 2
      has(seen[7].prompt, "```sh\npython3 app.py\n```", "### Block 1 (sh): passed", "hello from app")
      assert.is_nil(seen[7].prompt:find("round two", 1, true)) -- only the assembly goes to the executor
      has(seen[8].prompt, "## Commands", "VERDICT: PASSED", "python3 app.py prints hello")

      assert.same({ "succeeded", true, 2, 3 }, { out.status, out.ok, out.rounds, out.max_rounds })
      assert.same({ { round = 1, review = "CHANGES_REQUESTED" },
                    { round = 2, review = "APPROVED", execution = "PASSED", qa = "PASSED" } }, out.history)
      assert.same({ review = "APPROVED", execution = "PASSED", qa = "PASSED" }, out.verdicts)
      assert.same({ title = "A greeter: app.py prints hello", developer = "coder", source = "planner",
                    acceptance = { "python3 app.py prints hello", "review approved" } }, out.assignment)
      assert.matches("round two", out.artifacts.code, 1, true)
      assert.matches("\n\nVERDICT: PASSED$", out.artifacts.execution)
      assert.equals("print('hello from app')\n", H.read(data .. "/workspaces/" .. out.run_id .. "/app.py"))
    end)

    it("stops after max_rounds when the reviewer keeps asking for changes", function()
      local replies = {}
      for r = 1, 3 do
        replies[#replies + 1] = { agent = "fullstack_developer", content = "## Summary\nattempt " .. r }
        replies[#replies + 1] = { agent = "code_reviewer", content = "1. [major] still wrong (" .. r .. ")\nVERDICT: CHANGES_REQUESTED" }
      end
      local out, seen = pipeline("development", { task = { id = "T7", title = "Add a --flag option" },
                                                  acceptance = { "--flag works" }, max_rounds = 2 }, replies)
      -- acceptance criteria were given: no planner; two rounds, then it stops
      assert.same({ "fullstack_developer", "code_reviewer", "fullstack_developer", "code_reviewer" }, agents(seen))
      has(seen[1].prompt, "T7: Add a --flag option", "--flag works")
      has(seen[3].prompt, "Round 2 of 2", "still wrong (1)")
      assert.same({ "changes_requested", false, 2, "review" }, { out.status, out.ok, out.rounds, out.stopped_at })
      assert.equals("the review verdict was CHANGES_REQUESTED after round 2 of 2", out.reason)
      assert.same({ { round = 1, review = "CHANGES_REQUESTED" }, { round = 2, review = "CHANGES_REQUESTED" } }, out.history)
      assert.is_nil(out.artifacts.assembly)
      assert.same("input", out.assignment.source)
    end)

    it("sends QA's bugs back to the developer, and fails at a failing execution in the last round", function()
      local out, seen = pipeline("development", { task = "Greeter", acceptance = { "prints hello" }, max_rounds = 2 }, {
        { agent = "fullstack_developer", content = "r1 done" },
        { agent = "code_reviewer", content = "VERDICT: APPROVED" },
        { agent = "code_assembler", content = "## Commands\n```sh\necho built\n```" },
        { agent = "code_executor", content = "it ran" },
        { agent = "qa_tester", content = "## Bugs\n1. [major] no hello printed\nVERDICT: FAILED — AC1" },
        { agent = "fullstack_developer", content = "r2 done" },
        { agent = "code_reviewer", content = "VERDICT: APPROVED" },
        { agent = "code_assembler", content = "## Commands\n```sh\necho broken >&2; exit 3\n```" },
        { agent = "code_executor", content = "it broke" },
        { agent = "qa_tester", content = "VERDICT: PASSED" },
      })
      assert.same({ "fullstack_developer", "code_reviewer", "code_assembler", "code_executor", "qa_tester",
                    "fullstack_developer", "code_reviewer", "code_assembler", "code_executor" }, agents(seen))
      has(seen[6].prompt, "Findings to fix (from qa_tester)", "no hello printed")
      has(seen[9].prompt, "### Block 1 (sh): FAILED\nexit_code=3", "broken")
      assert.same({ "failed", false, "execution", 2 }, { out.status, out.ok, out.stopped_at, out.rounds })
      assert.equals("the execution verdict was FAILED after round 2 of 2", out.reason)
      assert.same({ { round = 1, review = "APPROVED", execution = "PASSED", qa = "FAILED" },
                    { round = 2, review = "APPROVED", execution = "FAILED" } }, out.history)
    end)

    it("killed inside round 2, resumes there: rounds already journaled are not run again", function()
      local env, log = model({
        { agent = "fullstack_developer", content = "r1 done" },
        { agent = "code_reviewer", content = "1. [major] missing --flag\nVERDICT: CHANGES_REQUESTED" },
        -- round 2's developer is busy in a tool when the process is killed
        { agent = "fullstack_developer", tool_calls = { { name = "run_code", arguments = { language = "sh", code = "sleep 3" } } } },
      })
      local p = H.spawn({ "run", "workflows/development.lua", "--input",
                          '{"task": "Add --flag", "acceptance": ["--flag works"], "max_rounds": 3}' }, { cwd = project, env = env })
      local id
      H.wait_until(function() id = p.stderr():match("run (%x+%-%x+) started") return id ~= nil end, 10000)
      assert.truthy(id, p.stderr())
      assert.is_true(H.wait_until(function() return #show(id).steps == 2 and #steps(log) == 3 end, 10000), p.stderr())
      p.kill()
      p.wait()
      assert.equals("running", show(id).status)

      local env2, log2 = model({
        { agent = "fullstack_developer", content = "r2 done: added --flag" },
        { agent = "code_reviewer", content = "VERDICT: APPROVED" },
        { agent = "code_assembler", content = "## Commands\n```sh\necho ok\n```" },
        { agent = "code_executor", content = "ran" },
        { agent = "qa_tester", content = "VERDICT: PASSED" },
      })
      local res = moonhive({ "runs", "resume", id, "--json" }, env2)
      assert.equals(0, res.code, H.show(res))
      local report = cjson.decode(res.stdout)
      assert.same({ "succeeded", 2 }, { report.status, report.steps.replayed })
      local seen = steps(log2)
      assert.same({ "fullstack_developer", "code_reviewer", "code_assembler", "code_executor", "qa_tester" }, agents(seen))
      -- the step that was cut off runs again, on the journaled review
      has(seen[1].prompt, "Round 2 of 3", "missing --flag")
      local out = report.output
      assert.same({ "succeeded", 2 }, { out.status, out.rounds })
      assert.same({ { round = 1, review = "CHANGES_REQUESTED" },
                    { round = 2, review = "APPROVED", execution = "PASSED", qa = "PASSED" } }, out.history)
    end)

    it("refuses bad input with a clear error", function()
      local env = model({})
      local res = moonhive({ "run", "workflows/development.lua", "--input", '{"task": "x", "max_rounds": 0}' }, env)
      assert.matches("development: 'max_rounds' must be a whole number from 1 to 10", H.fails(res), 1, true)
      res = moonhive({ "run", "workflows/project_init.lua", "--input", '{"team": []}' }, env)
      assert.matches('project_init: the input must be the request, or {"request": "..."}', H.fails(res), 1, true)
      res = moonhive({ "run", "workflows/deployment.lua", "--input", '{"approval": "yes", "project": "p"}' }, env)
      assert.matches("deployment: 'approval' must be true, false or {timeout = ms}", H.fails(res), 1, true)
    end)
  end)

  describe("deployment", function()
    local ENV = { name = "staging", url = "http://127.0.0.1:9/", health = "/health" }
    local FILES = { ["app.py"] = "print('hello')\n", ["README.md"] = "# Greeter\n" }
    local ASSEMBLY = "## Layout\napp.py\n## Commands\n```sh\npython3 app.py\n```\n## Handoff\nrun app.py"
    local LATER = {
      { agent = "deployer", content = "## Artifacts\n- deploy/run.sh\n## Handoff\nGET /health answers ok\nVERDICT: DEPLOYED" },
      { agent = "validator", content = "## Checklist\nV1 pass\n## Handoff\nwatch /health\nVERDICT: PASSED" },
      { agent = "monitor", content = "## Checks\nall ok\nVERDICT: HEALTHY" },
    }

    it("waits for approval, survives SIGKILL there, and resumes without re-running its steps", function()
      local p, id, log = start_waiting("deployment", { project = "the greeter", files = FILES, environment = ENV,
                                                      approval = true }, { { agent = "code_assembler", content = ASSEMBLY } })
      p.kill()
      p.wait()
      assert.same({ "code_assembler" }, agents(steps(log)))
      local run = show(id)
      assert.equals("waiting", run.status)
      local journal = {}
      for _, st in ipairs(run.steps) do journal[#journal + 1] = st.kind .. ":" .. tostring(st.name) .. ":" .. st.status end
      assert.same({ "tool:files:ok", "tool:files:ok", "call:code_assembler:ok", "tool:files:ok", "tool:run_code:ok",
                    "signal:approve:started" }, journal)

      H.ok(moonhive({ "runs", "signal", id, "approve", '{"approved": true, "by": "ann"}' }))
      -- the resumed process's model has replies for the later roles only: had
      -- the assembler run again, its call would find none and fail the run
      local env, log2 = model(LATER)
      local res = moonhive({ "runs", "resume", id, "--json" }, env)
      assert.equals(0, res.code, H.show(res))
      local report = cjson.decode(res.stdout)
      assert.same({ "succeeded", 5 }, { report.status, report.steps.replayed })
      local seen = steps(log2)
      assert.same({ "deployer", "validator", "monitor" }, agents(seen))
      has(seen[1].prompt, "the staging environment", '"name":"staging"', "run app.py", "exit 0\nPython 3")
      has(seen[2].prompt, "GET /health answers ok", "VERDICT: DEPLOYED")
      has(seen[3].prompt, "GET /health answers ok", "watch /health", '"health":"/health"')
      local out = report.output
      assert.same({ "succeeded", true, 2 }, { out.status, out.ok, out.files })
      assert.same({ approved = true, by = "ann" }, out.approval)
      assert.same({ deploy = "DEPLOYED", validation = "PASSED", monitoring = "HEALTHY" }, out.verdicts)
      assert.equals(ASSEMBLY, out.artifacts.assembly)
      assert.equals(0, out.artifacts.environment.exit_code)
      local ws = data .. "/workspaces/" .. id
      assert.equals("print('hello')\n", H.read(ws .. "/app.py"))
      assert.same(ENV, cjson.decode(H.read(ws .. "/deploy/environment.json")))
      assert.equals("succeeded", show(id).status)
    end)

    it("stops at a refused or timed-out approval, a failing setup command and a failing validation", function()
      local p, _, log = start_waiting("deployment", { project = "the greeter", approval = { timeout = 60000 } },
                                      { { agent = "code_assembler", content = ASSEMBLY } })
      local id = p.stderr():match("run (%x+%-%x+) started")
      H.ok(moonhive({ "runs", "signal", id, "approve", '{"approved": false, "reason": "freeze week"}' }))
      local res = p.wait()
      assert.equals(0, res.code, H.show(res))
      local out = cjson.decode(res.stdout)
      assert.same({ "rejected", false, "approval", "approval refused: freeze week" },
                  { out.status, out.ok, out.stopped_at, out.reason })
      assert.same({ "code_assembler" }, agents(steps(log)))

      local seen
      out, seen = pipeline("deployment", { project = "the greeter", approval = { timeout = 200 } },
                           { { agent = "code_assembler", content = ASSEMBLY }, LATER[1] })
      assert.same({ "code_assembler" }, agents(seen))
      assert.same({ "rejected", "approval", "no approval within 200 ms" }, { out.status, out.stopped_at, out.reason })

      out, seen = pipeline("deployment", { project = "the greeter", setup = "echo no toolchain >&2; exit 7" },
                           { { agent = "code_assembler", content = ASSEMBLY } })
      assert.same({ "code_assembler" }, agents(seen))
      assert.same({ "failed", "environment_setup", "the setup command 'echo no toolchain >&2; exit 7' exited with 7" },
                  { out.status, out.stopped_at, out.reason })
      assert.equals("no toolchain\n", out.artifacts.environment.stderr)

      out, seen = pipeline("deployment", { project = "the greeter", environment = ENV }, {
        { agent = "code_assembler", content = ASSEMBLY }, LATER[1],
        { agent = "validator", content = "## Checklist\nV2 fail\nVERDICT: FAILED — V2" }, LATER[3] })
      assert.same({ "code_assembler", "deployer", "validator" }, agents(seen))
      assert.same({ "failed", false, "validation", "the validation verdict was FAILED: V2" },
                  { out.status, out.ok, out.stopped_at, out.reason })
      assert.same({ deploy = "DEPLOYED", validation = "FAILED" }, out.verdicts)
    end)
  end)

  describe("research_to_deploy", function()
    local RESEARCH = "## Findings\n- Sums are exact for integers. [1]\n## Sources\n[1] https://docs.python.org/\n"
                     .. "## Handoff for coder\n1. main.py prints the sum of its integer arguments."
    local CODE = {
      { agent = "coder", tool_calls = { { name = "files", arguments = { op = "write", path = "main.py",
          text = "import sys\nprint(sum(int(a) for a in sys.argv[1:]))\n" } } } },
      { agent = "coder", content = "## Files\n- main.py\n## Handoff\nrun python3 main.py 2 3, expect 5" },
    }

    it("runs researcher, coder, validator, deployer, monitor, each on the one before", function()
      local replies = { { agent = "researcher", content = RESEARCH }, CODE[1], CODE[2],
        { agent = "validator", content = "## Handoff\nwatch /sum\nVERDICT: PASSED" },
        { agent = "deployer", content = "## Handoff\nGET /health answers ok\nVERDICT: DEPLOYED" },
        { agent = "monitor", content = "## Checks\nslow\nVERDICT: DEGRADED — /health slow" } }
      local out, seen = pipeline("research_to_deploy", { question = "How to add numbers from the command line?",
                                                         environment = { name = "prod", url = "http://127.0.0.1:9/" } }, replies)
      assert.same({ "researcher", "coder", "validator", "deployer", "monitor" }, agents(seen))
      has(seen[1].prompt, "How to add numbers from the command line?")
      has(seen[2].prompt, "main.py prints the sum of its integer arguments", "Sums are exact for integers")
      assert.is_nil(seen[2].prompt:find("https://docs.python.org/", 1, true)) -- the handoff, not the sources
      has(seen[3].prompt, "main.py prints the sum", "expect 5")
      has(seen[4].prompt, "the prod environment", '"url":"http://127.0.0.1:9/"', "expect 5", "watch /sum")
      has(seen[5].prompt, "GET /health answers ok")
      assert.same({ "degraded", false, "monitoring", "the monitoring verdict was DEGRADED: /health slow" },
                  { out.status, out.ok, out.stopped_at, out.reason })
      assert.same({ validation = "PASSED", deploy = "DEPLOYED", monitoring = "DEGRADED" }, out.verdicts)
      assert.equals(RESEARCH, out.artifacts.research)
      assert.matches("sum%(int%(a%)", H.read(data .. "/workspaces/" .. out.run_id .. "/main.py"))
    end)

    it("stops at the validator's FAILED: nothing is deployed", function()
      local out, seen = pipeline("research_to_deploy", "How to add numbers?", {
        { agent = "researcher", content = RESEARCH }, CODE[1], CODE[2],
        { agent = "validator", content = "VERDICT: FAILED — V1 (prints 6 for 2 3)" },
        { agent = "deployer", content = "VERDICT: DEPLOYED" } })
      assert.same({ "researcher", "coder", "validator" }, agents(seen))
      assert.same({ "failed", "validation", "the validation verdict was FAILED: V1 (prints 6 for 2 3)" },
                  { out.status, out.stopped_at, out.reason })
      assert.same({ "research", "code", "validation" }, { out.steps[1].name, out.steps[2].name, out.steps[3].name })
    end)
  end)
end)
