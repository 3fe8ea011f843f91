-- workflow_helpers.lua — what the workflow specs share: a project with a
-- "worker" agent answering through the mock LLM server, `moonhive` run in
-- it, runs started in the background (to SIGKILL them), `runs show`, and
-- the mock's requests counted per prompt.
--
--   local W = dofile(dir .. "../workflow_helpers.lua")(H)
--   lazy_setup(W.setup)  lazy_teardown(W.teardown)
local cjson = require "cjson"
local uv = require "luv"
local assert = require "luassert" -- busted's assert, which specs see as a global

return function(H)
  local W = {}

  function W.setup()
    W.project = H.tmpdir()
    W.data = W.project .. "/.moonhive"
    uv.fs_mkdir(W.project .. "/agents", 448)
    H.write(W.project .. "/agents/worker.lua", 'return agent{name = "worker", system = "You work."}')
    W.llm = H.start_mockllm()
  end

  function W.teardown()
    W.llm.stop()
    H.cleanup()
  end

  function W.env(extra)
    local e = { MOONHIVE_DATA = W.data, MOONHIVE_MODEL = "openai/x", OPENAI_API_KEY = "sk-test-wf",
                OPENAI_BASE_URL = W.llm.url("/v1"), ANTHROPIC_API_KEY = false }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  function W.moonhive(args, extra) return H.moonhive(args, { cwd = W.project, env = W.env(extra) }) end

  -- Writes FILE (a name with its extension) in the project; returns the name.
  function W.write(file, text)
    H.write(W.project .. "/" .. file, text)
    return file
  end

  -- Starts `moonhive ARGS` in the background (H.spawn).
  function W.start(args) return H.spawn(args, { cwd = W.project, env = W.env() }) end

  function W.run_id_of(text) return text:match("run (%x+%-%x+) started") end

  function W.show(id)
    return cjson.decode(H.ok(W.moonhive({ "runs", "show", id, "--json" })))
  end

  -- The mock's requests whose last user message starts "step KEY of TAG ", in
  -- the order received: {KEY = n}, {KEY, ...}.
  function W.counts(tag)
    local body = H.ok(W.moonhive({ "eval", ("return assert(http.get(%q)).body"):format(W.llm.url("/_requests")) }))
    local n, order = {}, {}
    for _, r in ipairs(cjson.decode(body)) do
      local msgs = type(r.body) == "table" and r.body.messages or {}
      local last
      for _, m in ipairs(msgs) do
        if m.role == "user" and type(m.content) == "string" then last = m.content end
      end
      local key = last and last:match("^step (%S+) of " .. H.lit(tag) .. " ")
      if key then
        n[key] = (n[key] or 0) + 1
        order[#order + 1] = key
      end
    end
    return n, order
  end

  function W.wait_status(id, status)
    return H.wait_until(function()
      local r = W.moonhive({ "runs", "show", id, "--json" })
      return r.code == 0 and cjson.decode(r.stdout).status == status
    end, 10000)
  end

  -- Starts FILE o.trials times with --input {"tag": TAG}, SIGKILLs each run
  -- at a random instant of [0, o.max_ms] ms (or of 1.25 x the time one
  -- whole run takes here, when that is longer: a slow or loaded machine
  -- would otherwise kill most trials before their run begins) and resumes
  -- what was killed
  -- mid-way, checking: the output is o.output; each of o.keys (prompts "step
  -- KEY of TAG") that was journaled before the kill is never executed again
  -- (o.key_of(result) names the key of a journaled call), every other one
  -- is executed once on resume; o.check(counts), if given, holds for every
  -- trial. Returns how many trials killed a run mid-way.
  function W.kill_trials(file, o)
    math.randomseed(os.time())
    local t0 = uv.hrtime()
    local whole = W.moonhive({ "run", file, "--input", '{"tag": "whole"}' })
    assert.equals(0, whole.code, H.show(whole))
    local window = math.max(o.max_ms, math.floor((uv.hrtime() - t0) / 1e6 * 1.25))
    local crashed, seen = 0, {}
    for trial = 1, o.trials do
      local tag = "t" .. trial .. "-" .. math.random(1e6)
      local p = W.start({ "run", file, "--input", ('{"tag": "%s"}'):format(tag) })
      local delay = math.random(0, window)
      local timer = uv.new_timer()
      timer:start(delay, 0, function() p.kill() end)
      local res = p.wait()
      timer:close()
      H.flush()
      local id = W.run_id_of(res.stderr)
      local before = W.counts(tag)
      if not id then
        -- killed before the run was created: nothing may have run
        assert.same({}, before, "trial " .. trial)
      else
        local run = W.show(id)
        seen[#seen + 1] = ("%d ms: %s"):format(delay, run.status)
        if run.status == "succeeded" then
          assert.same(o.output, run.output)
        else
          crashed = crashed + 1
          local journaled = {}
          for _, st in ipairs(run.steps or {}) do
            if st.kind == "call" and st.status == "ok" then journaled[o.key_of(cjson.decode(st.result))] = true end
          end
          local r = W.moonhive({ "runs", "resume", id, "--json" })
          assert.equals(0, r.code, "trial " .. trial .. " (killed at " .. delay .. " ms)\n" .. H.show(r))
          assert.same(o.output, cjson.decode(r.stdout).output)
          local after = W.counts(tag)
          for _, key in ipairs(o.keys) do
            local msg = ("trial %d, step %s, killed at %d ms"):format(trial, key, delay)
            if journaled[key] then
              assert.equals(1, after[key], msg .. ": journaled, so never executed again")
            else
              assert.equals(1, (after[key] or 0) - (before[key] or 0), msg .. ": executed once on resume")
            end
          end
          assert.equals("succeeded", W.show(id).status)
        end
        local total = W.counts(tag)
        for _, key in ipairs(o.keys) do assert.is_true((total[key] or 0) >= 1, key) end
        if o.check then o.check(total) end
      end
    end
    -- how the trials ended, for the caller's message when too few were mid-way
    return crashed, ("window %d ms; %s"):format(window, table.concat(seen, ", "))
  end

  return W
end
