-- Every file in examples/ runs, and says what its comment promises.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./") .. "../helpers.lua")

local function run_example(name, args)
  local argv = {"run", "examples/" .. name}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return H.moonhive(argv, {cwd = H.root})
end

describe("examples", function()
  local srv
  lazy_setup(function() srv = H.start_testserver() end)
  lazy_teardown(function() if srv then srv.stop() end H.cleanup() end)

  it("hello.lua greets its argument", function()
    assert.equals("hello, reader!\n", H.ok(run_example("hello.lua", {"reader"})))
  end)

  it("concurrent.lua finishes the shortest worker first", function()
    local out = H.ok(run_example("concurrent.lua"))
    assert.matches("finished in order: worker 3 %(100 ms%), worker 2 %(200 ms%), worker 1 %(300 ms%)", out)
    assert.matches("slept 600 ms in all", out)
  end)

  it("fetch.lua fetches a URL", function()
    local out = H.ok(run_example("fetch.lua", {srv.url("/hello")}))
    assert.equals("status 200, text/plain, 12 bytes\n", out)
  end)

  it("fetch.lua fails with status 1 when the server is gone", function()
    local res = run_example("fetch.lua", {"http://127.0.0.1:1/"})
    local err = H.fails(res, 1)
    assert.matches("could not fetch", err)
  end)

  it("sse.lua prints each event as it arrives", function()
    local out = H.ok(run_example("sse.lua", {srv.url("/sse?n=2")}))
    assert.matches("event greeting id=1: first line\nsecond line", out, 1, true)
    assert.matches("event tick id=3: {\"i\":1}", out, 1, true)
    assert.matches("4 events, status 200", out, 1, true)
  end)

  it("shop_assistant.lua runs as an agent: its own tool and the calculator, then an answer", function()
    local res = H.moonhive({"run", "examples/shop_assistant.lua",
      'Price of 12 pears? [tool:unit_price:{"product":"pear"}] [tool:calculator:{"expression":"12 * 0.75"}]'},
      {cwd = H.root, env = {MOONHIVE_MODEL = "mock/default"}})
    assert.equals(0, res.code, H.show(res))
    assert.equals('mock: tool results: {"product":"pear","usd":0.75} | {"result":9}\n', res.stdout)
    assert.matches("[shop_assistant] → unit_price", res.stderr, 1, true)
  end)

  it("tour.lua (make tour) walks through every section", function()
    local out = H.ok(run_example("tour.lua"))
    assert.matches("io = nil, os.getenv = nil", out, 1, true)
    assert.matches("three 200 ms sleeps %-> abc", out)
    assert.matches("memory hog: false, memory limit of 64 MiB exceeded", out, 1, true)
    assert.matches("string.rep works again: 1000000", out, 1, true)
    assert.matches("retry.call -> done after 3 attempts", out, 1, true)
  end)
end)
