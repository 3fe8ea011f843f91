-- cli_spec.lua — the moonhive command line: commands, help, exit codes, `run`
-- and `eval`, error reports, require, limits and the sandbox, driven through
-- the real binary ($MOONHIVE_BIN).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")

local lit = H.lit

-- Evaluates printed Lua text back into a value (the spec's own Lua, not the sandbox).
local function reload(text)
  local f = assert(load("return " .. text, "=output", "t", {}))
  return f()
end

local COMMANDS = {"run", "eval", "repl", "version", "help"}

describe("moonhive CLI", function()
  lazy_teardown(function() H.cleanup() end)

  describe("commands and help", function()
    it("version prints the moonhive and Lua versions", function()
      local out = H.ok(H.moonhive({"version"}))
      assert.matches("^moonhive %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)\n$", out)
    end)

    it("help lists every command", function()
      local out = H.ok(H.moonhive({"help"}))
      assert.matches("^usage: moonhive COMMAND", out)
      for _, cmd in ipairs(COMMANDS) do
        assert.matches("\n  " .. cmd .. " ", out, 1, false)
      end
    end)

    it("a top-level --help is the same text as help", function()
      local help = H.ok(H.moonhive({"help"}))
      assert.equals(help, H.ok(H.moonhive({"--help"})))
    end)

    for _, cmd in ipairs(COMMANDS) do
      it("`" .. cmd .. " --help` prints the command's usage and exits 0", function()
        local out = H.ok(H.moonhive({cmd, "--help"}))
        assert.matches("^usage: moonhive " .. cmd, out)
      end)

      it("`help " .. cmd .. "` prints the same usage as `" .. cmd .. " --help`", function()
        assert.equals(H.ok(H.moonhive({cmd, "--help"})), H.ok(H.moonhive({"help", cmd})))
      end)
    end

    it("the limit options are documented for run and eval", function()
      for _, cmd in ipairs({"run", "eval"}) do
        local out = H.ok(H.moonhive({cmd, "--help"}))
        assert.matches("--memory-limit", out, 1, true)
        assert.matches("--cpu-limit", out, 1, true)
        assert.matches("--deadline", out, 1, true)
      end
    end)

    it("an unknown command prints usage on stderr and exits 2", function()
      local res = H.moonhive({"frobnicate"})
      local err = H.fails(res, 2)
      assert.equals("", res.stdout)
      assert.matches("unknown command 'frobnicate'", err, 1, true)
      assert.matches("usage: moonhive COMMAND", err, 1, true)
    end)

    it("no command at all prints usage on stderr and exits 2", function()
      local res = H.moonhive({})
      local err = H.fails(res, 2)
      assert.equals("", res.stdout)
      assert.matches("usage: moonhive COMMAND", err, 1, true)
    end)

    it("help for an unknown command exits 2 and names it", function()
      local res = H.moonhive({"help", "frobnicate"})
      assert.matches("frobnicate", H.fails(res, 2), 1, true)
      assert.equals("", res.stdout)
    end)

    it("run without a file exits 2 with the run usage", function()
      local res = H.moonhive({"run"})
      local err = H.fails(res, 2)
      assert.matches("run needs a script file", err, 1, true)
      assert.matches("usage: moonhive run", err, 1, true)
    end)

    it("run of a missing file exits 1 and names the file", function()
      local dir = H.tmpdir()
      local err = H.fails(H.moonhive({"run", dir .. "/no-such-script.lua"}))
      assert.matches("no-such-script.lua", err, 1, true)
    end)

    it("an unknown option exits 2 with the command's usage", function()
      local res = H.moonhive({"eval", "--bogus-option", "1", "return 1"})
      local err = H.fails(res, 2)
      assert.matches("unknown option '--bogus-option'", err, 1, true)
      assert.matches("usage: moonhive eval", err, 1, true)
      assert.equals("", res.stdout)
    end)
  end)

  describe("run", function()
    it("passes arguments as arg[1..n] and as ..., with arg[0] the script", function()
      local res = H.run_script([[
        print(arg[0])
        print(#arg, select("#", ...))
        for i = 1, #arg do print(i, "[" .. arg[i] .. "]", (select(i, ...)) == arg[i]) end
      ]], {args = {"one", "two words", "", "--memory-limit"}})
      local out = H.ok(res)
      assert.equals(table.concat({
        "script.lua",
        "4\t4",
        "1\t[one]\ttrue",
        "2\t[two words]\ttrue",
        "3\t[]\ttrue",
        "4\t[--memory-limit]\ttrue",
      }, "\n") .. "\n", out)
    end)

    it("gives an empty arg table and no varargs when there are no arguments", function()
      local out = H.ok(H.run_script('print(type(arg), #arg, select("#", ...))'))
      assert.equals("table\t0\t0\n", out)
    end)

    it("options before the file apply to the run; after it they are script arguments", function()
      local res = H.run_script('print(#arg, arg[1], arg[2]) local s = ("x"):rep(16 * 1024 * 1024)',
        {flags = {"--memory-limit", "8M"}, args = {"--memory-limit", "64M"}})
      assert.matches("memory limit of 8 MiB exceeded", H.fails(res), 1, true)
      assert.equals("2\t--memory-limit\t64M\n", res.stdout)
    end)

    it("exits 0 after a successful script and 1 after an error", function()
      H.ok(H.run_script('local x = 1 + 1'))
      H.fails(H.run_script('error("no")'))
    end)

    it("reports a syntax error as file:line: message and exits 1", function()
      local res = H.run_script("local x = 1\nlocal y = = 2\nprint('never')\n")
      local err = H.fails(res)
      assert.matches("script%.lua:2: ", err)
      assert.matches("'='", err, 1, true)
      assert.equals("", res.stdout)
    end)

    it("reports a runtime error with its location and a traceback naming the script", function()
      local res = H.run_script(table.concat({
        "print('before')",                -- 1
        "local function inner()",         -- 2
        "  error('kaboom')",              -- 3
        "end",                            -- 4
        "local function outer() inner() end", -- 5
        "outer()",                        -- 6
        "print('after')",                 -- 7
      }, "\n"))
      local err = H.fails(res)
      assert.equals("before\n", res.stdout)
      local first = err:match("^[^\n]*")
      assert.matches("script%.lua:3: kaboom$", first)
      local tb = err:match("\nstack traceback:\n(.*)$")
      assert.is_truthy(tb, "no traceback in:\n" .. err)
      assert.matches("script%.lua:3:", tb)
      assert.matches("script%.lua:5:", tb)
      assert.matches("script%.lua:6: in main chunk", tb)
    end)

    it("reports errors from the language itself (indexing nil) with the line", function()
      local err = H.fails(H.run_script("local t\n\nreturn t.field\n"))
      assert.matches("script%.lua:3: attempt to index a nil value %(local 't'%)", err)
      assert.matches("stack traceback:", err, 1, true)
    end)
  end)

  describe("eval", function()
    local function eval_out(code, flags)
      return H.ok(H.eval(code, {flags = flags}))
    end

    it("prints the value of an expression", function()
      assert.equals("2\n", eval_out("1 + 1"))
      assert.equals("3.5\n", eval_out("7 / 2"))
    end)

    it("prints what statements return", function()
      assert.equals("42\n", eval_out("local x = 40 return x + 2"))
    end)

    it("prints a top-level string raw, without quotes or escapes", function()
      assert.equals("hello world\n", eval_out('"hello " .. "world"'))
      assert.equals("a\nb\n", eval_out('"a\\nb"'))
    end)

    it("prints several values separated by tabs", function()
      assert.equals("a\t2\tnil\ttrue\n", eval_out('return "a", 2, nil, true'))
    end)

    it("pretty-prints nested tables as readable Lua", function()
      local out = eval_out('{1, 2, {a = "x"}, b = {c = 1, d = {true}}, ["odd key"] = "q\\t"}')
      assert.same({1, 2, {a = "x"}, b = {c = 1, d = {true}}, ["odd key"] = "q\t"}, reload(out))
      -- nested values are quoted (unlike a top-level string)
      assert.matches('"x"', out, 1, true)
      assert.same({"a\tb"}, reload(eval_out('{"a\\tb"}')))
      assert.equals("{}\n", eval_out("{}"))
    end)

    it("prints nothing when the code returns no values", function()
      assert.equals("", eval_out("local x = 1"))
      assert.equals("", eval_out("return"))
      assert.equals("", eval_out("do end"))
    end)

    it("prints nil for an explicit nil value", function()
      assert.equals("nil\n", eval_out("nil"))
    end)

    it("prints what the code printed before its values", function()
      assert.equals("p\n7\n", eval_out('print("p") return 7'))
    end)

    it("sends errors to stderr and exits 1", function()
      local res = H.eval('error("bad thing")')
      local err = H.fails(res)
      assert.equals("", res.stdout)
      assert.matches("^eval:1: bad thing\n", err)
      assert.matches("stack traceback:", err, 1, true)
    end)

    it("reports a syntax error and exits 1", function()
      local res = H.eval("return +")
      assert.matches("eval:1:", H.fails(res), 1, true)
      assert.equals("", res.stdout)
    end)

    it("raises on reads of undefined globals", function()
      assert.matches("undefined global 'no_such_thing'", H.fails(H.eval("no_such_thing")), 1, true)
      assert.matches("undefined global 'x'", H.fails(H.eval("return x + 1")), 1, true)
    end)

    it("allows declared globals", function()
      assert.equals("5\n", eval_out("y = 5 return y"))
    end)
  end)

  describe("require", function()
    it("finds a module in the script's own folder, whatever the cwd", function()
      local dir = H.tmpdir()
      H.write(dir .. "/counter_mod.lua", [[
        print("loading counter_mod")
        local M = {}
        function M.greet(n) return "hi " .. n end
        return M
      ]])
      H.write(dir .. "/main.lua", [[
        local m = require "counter_mod"
        print(m.greet("bob"))
        print(require("counter_mod") == m)
      ]])
      -- cwd is the repo root, not the script's folder; the module loads once
      local out = H.ok(H.moonhive({"run", dir .. "/main.lua"}))
      assert.equals("loading counter_mod\nhi bob\ntrue\n", out)
    end)

    it("maps dotted names to sub-folders of the script's folder", function()
      local dir = H.tmpdir()
      assert(require("luv").fs_mkdir(dir .. "/lib", tonumber("755", 8)))
      H.write(dir .. "/lib/util.lua", 'return {name = "util"}')
      H.write(dir .. "/main.lua", 'print(require("lib.util").name)')
      assert.equals("util\n", H.ok(H.moonhive({"run", dir .. "/main.lua"})))
    end)

    it("gives a clear error for a missing module", function()
      local res = H.run_script('require "no_such_module_here"')
      local err = H.fails(res)
      assert.matches("script%.lua:1: module 'no_such_module_here' not found", err)
    end)

    it("refuses paths that leave the allowed folders", function()
      local dir = H.tmpdir()
      assert(require("luv").fs_mkdir(dir .. "/sub", tonumber("755", 8)))
      -- the targets exist, so only the guard can stop them
      H.write(dir .. "/escape.lua", 'print("ESCAPED") return {}')
      H.write(dir .. "/sub/main.lua", [[
        for _, name in ipairs({"../escape", "/etc/passwd", "sub/../../escape"}) do
          local ok, err = pcall(require, name)
          print(ok, err)
        end
      ]])
      local out = H.ok(H.moonhive({"run", dir .. "/sub/main.lua"}))
      assert.not_matches("ESCAPED", out, 1, true)
      local n = 0
      for line in out:gmatch("[^\n]+") do
        n = n + 1
        assert.matches("^false\t", line)
        assert.matches("module '.-' not found", line)
      end
      assert.equals(3, n)
    end)

    it("an uncaught `require \"../x\"` fails the run with a clear message", function()
      local dir = H.tmpdir()
      H.write(dir .. "/x.lua", 'return 1')
      assert(require("luv").fs_mkdir(dir .. "/sub", tonumber("755", 8)))
      H.write(dir .. "/sub/main.lua", 'require "../x"')
      local err = H.fails(H.moonhive({"run", dir .. "/sub/main.lua"}))
      assert.matches("module '../x' not found", err, 1, true)
    end)

    it("finds the native modules, which are the globals", function()
      assert.equals("true\ttrue\ttrue\n",
        H.ok(H.eval('return require("http") == http, require("time") == time, require("log") == log')))
    end)

    it("does not hand out host libraries", function()
      for _, name in ipairs({"io", "os", "debug", "package"}) do
        local res = H.eval(string.format("return pcall(require, %q)", name))
        local out = H.ok(res)
        assert.matches("^false\t", out)
      end
    end)
  end)

  describe("limits", function()
    local GROW = 'local t = {} for i = 1, 1e8 do t[i] = ("x"):rep(100) .. i end'
    local BIG = 'return #("x"):rep(16 * 1024 * 1024)'

    it("--memory-limit stops a script that keeps allocating", function()
      local res = H.eval(GROW, {flags = {"--memory-limit", "8M"}})
      assert.matches("memory limit of 8 MiB exceeded", H.fails(res), 1, true)
    end)

    it("--memory-limit is what stops a large allocation (it passes without it)", function()
      assert.equals("16777216\n", H.ok(H.eval(BIG)))
      local err = H.fails(H.eval(BIG, {flags = {"--memory-limit", "8M"}}))
      assert.matches("memory limit of 8 MiB exceeded", err, 1, true)
      assert.equals("16777216\n", H.ok(H.eval(BIG, {flags = {"--memory-limit", "0"}})))
    end)

    it("the memory limit applies to run as well", function()
      local res = H.run_script(GROW, {flags = {"--memory-limit", "16M"}})
      assert.matches("memory limit of 16 MiB exceeded", H.fails(res), 1, true)
    end)

    it("MOONHIVE_MEMORY_LIMIT sets the memory limit", function()
      local res = H.eval(BIG, {env = {MOONHIVE_MEMORY_LIMIT = "8M"}})
      assert.matches("memory limit of 8 MiB exceeded", H.fails(res), 1, true)
    end)

    it("the --memory-limit option wins over MOONHIVE_MEMORY_LIMIT", function()
      local res = H.eval(BIG, {env = {MOONHIVE_MEMORY_LIMIT = "8M"}, flags = {"--memory-limit", "64M"}})
      assert.equals("16777216\n", H.ok(res))
    end)

    it("--cpu-limit stops a busy loop", function()
      local res = H.eval("while true do end", {flags = {"--cpu-limit", "200ms"}})
      assert.matches("CPU budget exceeded", H.fails(res), 1, true)
    end)

    it("pcall cannot swallow the CPU limit", function()
      local res = H.eval([[
        for i = 1, 20 do pcall(function() while true do end end) end
        return "swallowed"
      ]], {flags = {"--cpu-limit", "200ms"}})
      assert.matches("CPU budget exceeded", H.fails(res), 1, true)
      assert.not_matches("swallowed", res.stdout, 1, true)
    end)

    it("the CPU limit reaches busy loops inside coroutines", function()
      local res = H.eval([[
        local ok = pcall(coroutine.wrap(function() while true do end end))
        return "swallowed"
      ]], {flags = {"--cpu-limit", "200ms"}})
      assert.matches("CPU budget exceeded", H.fails(res), 1, true)
      assert.not_matches("swallowed", res.stdout, 1, true)
    end)

    it("MOONHIVE_CPU_LIMIT sets the CPU limit", function()
      local res = H.eval("while true do end", {env = {MOONHIVE_CPU_LIMIT = "200ms"}})
      assert.matches("CPU budget exceeded", H.fails(res), 1, true)
    end)

    it("--deadline stops a script that sleeps past it", function()
      local res = H.eval("sleep(30000) return 'woke'", {flags = {"--deadline", "300ms"}})
      assert.matches("deadline of 300 ms exceeded", H.fails(res), 1, true)
      assert.equals("", res.stdout)
    end)

    it("pcall cannot swallow the deadline", function()
      local res = H.eval([[
        local ok, e = pcall(sleep, 30000)
        print("caught", e)
        return "after"
      ]], {flags = {"--deadline", "300ms"}})
      assert.matches("deadline of 300 ms exceeded", H.fails(res), 1, true)
      assert.not_matches("after", res.stdout, 1, true)
    end)

    it("MOONHIVE_DEADLINE sets the deadline", function()
      local res = H.eval("sleep(30000)", {env = {MOONHIVE_DEADLINE = "200ms"}})
      assert.matches("deadline of 200 ms exceeded", H.fails(res), 1, true)
    end)

    it("a sleep shorter than the deadline completes", function()
      assert.equals("done\n", H.ok(H.eval("sleep(20) return 'done'", {flags = {"--deadline", "30s"}})))
    end)

    describe("bad values are refused before anything runs (exit 2)", function()
      local cases = {
        {{"--memory-limit", "abc"}, "--memory-limit needs a size"},
        {{"--memory-limit", "-5M"}, "--memory-limit needs a size"},
        {{"--memory-limit"}, "--memory-limit needs a size"},
        {{"--cpu-limit", "xyz"}, "--cpu-limit needs a duration"},
        {{"--deadline", "5parsecs"}, "--deadline needs a duration"},
      }
      for _, c in ipairs(cases) do
        it(table.concat(c[1], " "), function()
          local res = H.run_script('print("RAN")', {flags = c[1]})
          local err = H.fails(res, 2)
          assert.matches(c[2], err, 1, true)
          assert.equals("", res.stdout)
        end)
      end

      it("a bad MOONHIVE_MEMORY_LIMIT names the variable", function()
        local res = H.eval('print("RAN")', {env = {MOONHIVE_MEMORY_LIMIT = "lots"}})
        local err = H.fails(res, 2)
        assert.matches("MOONHIVE_MEMORY_LIMIT", err, 1, true)
        assert.equals("", res.stdout)
      end)
    end)
  end)

  describe("sandbox", function()
    it("a script cannot read the environment", function()
      local res = H.run_script([[
        print(os.getenv)
        print(pcall(function() return os.getenv("SPEC_SECRET") end))
      ]], {env = {SPEC_SECRET = "xyzzy-secret"}})
      local out = H.ok(res)
      assert.not_matches("xyzzy-secret", out, 1, true)
      assert.matches("^nil\nfalse\t", out)
    end)

    it("a script cannot use io", function()
      local res = H.run_script('local f = io.open("/etc/passwd") print(f:read("a"))')
      assert.matches("undefined global 'io'", H.fails(res), 1, true)
      assert.not_matches("root:", res.stdout, 1, true)
    end)

    it("os holds only time, clock, date and difftime", function()
      local out = H.ok(H.eval([[
        local t = {} for k in pairs(os) do t[#t + 1] = k end
        table.sort(t) return table.concat(t, ",")
      ]]))
      assert.equals("clock,date,difftime,time\n", out)
      assert.equals("number\tnumber\tstring\t1.0\n",
        H.ok(H.eval("return type(os.time()), type(os.clock()), type(os.date()), os.difftime(2, 1)")))
    end)

    it("debug, package, dofile and loadfile are not there", function()
      for _, name in ipairs({"debug", "package", "dofile", "loadfile"}) do
        assert.matches("undefined global '" .. name .. "'", H.fails(H.eval("return " .. name)), 1, true)
      end
    end)

    it("string.dump is gone and binary chunks do not load", function()
      assert.equals("nil\n", H.ok(H.eval("return string.dump")))
      local out = H.ok(H.eval('return load("\\27Lua")'))
      assert.matches("^nil\t.*binary", out)
    end)

    it("shared library tables and the globals' metatable are read-only", function()
      assert.matches("read-only", H.fails(H.eval("string.rep = nil")), 1, true)
      assert.matches("protected metatable", H.fails(H.eval("setmetatable(_G, nil)")), 1, true)
    end)
  end)
end)
