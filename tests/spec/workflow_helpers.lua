-- workflow_helpers.lua — what the workflow specs share: a project with a
-- "worker" agent answering through the mock LLM server, `moonhive` run in
-- it, runs started in the background (to SIGKILL them), `runs show`, and
-- the mock's requests counted per prompt.
--
--   local W = dofile(dir .. "../workflow_helpers.lua")(H)
--   lazy_setup(W.setup)  lazy_teardown(W.teardown)
local cjson = require "cjson"
local uv = require "luv"

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

  -- Starts `moonhive ARGS` in the background: :kill(), :stderr(), :wait() -> {code, signal, stdout, stderr}.
  function W.start(args)
    local out, err, res = {}, {}, {}
    local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
    local vars, e = uv.os_environ(), {}
    for k, v in pairs(W.env()) do vars[k] = v or nil end
    for k, v in pairs(vars) do e[#e + 1] = k .. "=" .. v end
    local handle = assert(uv.spawn(H.bin, { args = args, cwd = W.project, env = e, stdio = { nil, stdout, stderr } },
                                   function(code, sig) res.code, res.signal = code, sig end))
    local open = 2
    local function reader(pipe, acc)
      pipe:read_start(function(_, chunk)
        if chunk then acc[#acc + 1] = chunk else pipe:close() open = open - 1 end
      end)
    end
    reader(stdout, out)
    reader(stderr, err)
    local p = {}
    function p.stderr() return table.concat(err) end
    function p.kill() if res.code == nil then handle:kill("sigkill") end end
    function p.wait()
      H.wait_until(function() return res.code ~= nil and open == 0 end, 30000)
      if not handle:is_closing() then handle:close() end
      H.flush()
      res.stdout, res.stderr = table.concat(out), table.concat(err)
      return res
    end
    return p
  end

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

  return W
end
