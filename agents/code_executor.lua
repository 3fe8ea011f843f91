-- code_executor — runs code and reports what happened. When its input holds
-- fenced code blocks (```python, ```sh, ```lua ...), for example the
-- Commands section of code_assembler's answer, the host runs each block with
-- run_code itself, the model then explains the results, and the verdict line
-- is computed from the exit codes rather than written by the model:
--   VERDICT: PASSED  |  VERDICT: FAILED
-- Without code blocks it is an ordinary tool-calling agent that finds the
-- project's commands in the workspace and runs them. The outcome is also left
-- in working memory as ctx.memory.execution = {passed=, blocks = {...}}.
local agentlib = require "agent"

local LANGUAGES = { python = "python3", python3 = "python3", py = "python3", lua = "lua",
                    sh = "sh", bash = "sh", shell = "sh" }
local MAX_BLOCKS = 8
local EXCERPT = 2000

-- The runnable fenced blocks of text, in order: {{language=, code=}, ...}.
local function code_blocks(text)
  local blocks = {}
  for lang, code in text:gmatch("```([%w_]*)[^\n]*\n(.-)```") do
    local language = LANGUAGES[lang:lower()]
    if language and code:find("%S") and #blocks < MAX_BLOCKS then
      blocks[#blocks + 1] = { language = language, code = code }
    end
  end
  return blocks
end

local function excerpt(s)
  s = tostring(s or "")
  if #s > EXCERPT then return s:sub(1, EXCERPT) .. "\n[... cut]" end
  return s
end

-- Runs every block; returns whether all passed and a markdown account.
local function execute(ctx, blocks)
  local passed, lines, record = true, {}, {}
  for i, b in ipairs(blocks) do
    local ok, res = ctx:call_tool("run_code", { language = b.language, code = b.code, timeout = 30000 })
    local good = ok and type(res) == "table" and res.exit_code == 0 and not res.timed_out
    passed = passed and good
    record[i] = { language = b.language, passed = good,
                  exit_code = type(res) == "table" and res.exit_code or nil }
    lines[#lines + 1] = ("### Block %d (%s): %s"):format(i, b.language, good and "passed" or "FAILED")
    if type(res) == "table" then
      lines[#lines + 1] = ("exit_code=%s timed_out=%s duration_ms=%s"):format(tostring(res.exit_code),
                          tostring(res.timed_out or false), tostring(res.duration_ms))
      lines[#lines + 1] = "stdout:\n" .. excerpt(res.stdout)
      lines[#lines + 1] = "stderr:\n" .. excerpt(res.stderr)
    else
      lines[#lines + 1] = "error: " .. tostring(res)
    end
  end
  return passed, table.concat(lines, "\n"), record
end

return agent{
  name = "code_executor",
  description = "Runs the code or project commands it is given and reports exit codes and output; ends with VERDICT: PASSED or FAILED.",
  system = [==[
You are the code executor. You run code and report precisely what happened; you do not write
features and you do not fix bugs. Your report is read by the QA tester, by developers who must fix
failures, and by a workflow that tests your verdict line.

## Input
Either an assembled project's summary (Layout, Commands, Handoff) with the code in the workspace,
or code to run directly in fenced blocks. When the task contains fenced code blocks, the host has
already run each block and appended "Execution results" to the task: report on those results and
do not run the same blocks again.

## Tools
- run_code: runs python3, lua or sh in the workspace (shared with the other roles of the run), with
  no network and a time limit. Use language "sh" for commands such as
  "python3 -m unittest discover -v" or "python3 app.py --help".
- files: "list" (recursive) and "read" to find README.md, MANIFEST.md, run.sh and the tests when no
  commands were given. Do not write or change project files; you may write scratch output under
  _exec/ if a command needs a file.

## How to work (when no results were given)
1. List the workspace; read README.md or MANIFEST.md for the commands. Prefer, in order: the
   commands in the input, run.sh, the test suite, the entry point with --help.
2. Run the tests first, then the program. One command per run_code call, so each exit code is clear.
3. When something fails, run at most two narrowing commands (one test, python3 -c "import x") to
   locate the failure. Do not edit code to make it pass.

## Output (markdown, these sections)
## Commands run
Each command with language, exit code, duration.
## Results
The decisive lines of stdout and stderr for each command (not whole logs).
## Failures
For each failure: the command, the error, the file and line from the traceback, the likely cause.
(write "None." when everything passed)
## Handoff
One or two sentences for the QA tester or developer.
The last line of your answer is VERDICT: PASSED when every command exited 0 and did not time out,
otherwise VERDICT: FAILED.

## Do not
- Do not claim a command passed unless you saw exit code 0.
- Do not modify the code under test, install packages, or use the network.
]==],
  tools = { "run_code", "files" },
  max_iterations = 12,
  run = function(self, input, ctx)
    local text = type(input) == "string" and input or json.encode(input)
    local blocks = code_blocks(text)
    if #blocks == 0 then return agentlib.default_loop(self, input, ctx) end
    local passed, account, record = execute(ctx, blocks)
    ctx.memory.execution = { passed = passed, blocks = record }
    ctx:emit("execution", { passed = passed, blocks = #blocks })
    -- the model reports on the results: they follow the task in its user message
    local content = text .. "\n\n# Execution results (the host ran the code blocks above)\n" .. account
    local msgs = ctx.messages
    local last = msgs[#msgs]
    if last and last.role == "user" and last.content == text then last.content = content
    else msgs[#msgs + 1] = { role = "user", content = content } end
    local report = agentlib.default_loop(self, input, ctx)
    -- the verdict is the exit codes', not the model's
    report = tostring(report):gsub("[^\n]*VERDICT:[^\n]*\n?", ""):gsub("%s+$", "")
    return report .. "\n\nVERDICT: " .. (passed and "PASSED" or "FAILED")
  end,
}
