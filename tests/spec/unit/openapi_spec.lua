-- Unit specs for lua/moonhive/service/openapi.lua (pure Lua, no host): the
-- document is JSON, OpenAPI 3.1, its references resolve, and it describes
-- exactly the routes the service's router answers — every route with the
-- same methods and role — so a route added without documentation fails here.
-- The service is loaded with the host's native modules and globals stubbed.
local root = os.getenv("MOONHIVE_ROOT") or "."
local cjson = require "cjson"

-- Routes of the API contract that other branches add; documented already,
-- and checked like any other once the router has them.

local METHODS = { get = "GET", post = "POST", put = "PUT", patch = "PATCH", delete = "DELETE" }

describe("moonhive.service.openapi", function()
  local saved_path, searcher, stubbed = package.path, nil, {}
  local doc, routes

  local function stub()
    return setmetatable({}, { __index = function() return function() end end })
  end

  lazy_setup(function()
    package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
    -- the host's native modules (host, store, crypto, auth, ...) are stubs;
    -- a missing runtime module (moonhive.*) is still an error
    searcher = function(name)
      if name:match("^moonhive%.") then return nil end
      return function() return stub() end
    end
    table.insert(package.searchers, searcher)
    for _, g in ipairs({ "host", "time", "log", "sleep", "task" }) do
      if _G[g] == nil then _G[g], stubbed[#stubbed + 1] = stub(), g end
    end
    local service = require "moonhive.service"
    routes = service.router:list()
    doc = cjson.decode(require("moonhive.service.openapi").json("1.2.3"))
  end)

  lazy_teardown(function()
    for i, s in ipairs(package.searchers) do if s == searcher then table.remove(package.searchers, i) end end
    for _, g in ipairs(stubbed) do _G[g] = nil end
    package.path = saved_path
  end)

  it("is an OpenAPI 3.1 document whose references all resolve", function()
    assert.equal("3.1.0", doc.openapi)
    assert.equal("1.2.3", doc.info.version)
    assert.equal("bearer", doc.components.securitySchemes.bearer.scheme)
    local refs = 0
    local function walk(v)
      if type(v) ~= "table" then return end
      for k, x in pairs(v) do
        if k == "$ref" then
          local name = x:match("^#/components/schemas/(.+)$")
          assert(name and doc.components.schemas[name], "a $ref that does not resolve: " .. tostring(x))
          refs = refs + 1
        else
          walk(x)
        end
      end
    end
    walk(doc)
    assert.is_true(refs > 10)
  end)

  it("documents every route the router answers, with its role", function()
    assert.is_true(#routes >= 9)
    for _, r in ipairs(routes) do
      local item = doc.paths[r.pattern]
      assert(item, ("%s %s is routed but not in the OpenAPI document"):format(r.method, r.pattern))
      local operation = item[r.method:lower()]
      assert(operation, ("%s %s is routed but the document has no %s for it"):format(r.method, r.pattern, r.method))
      assert.equal(r.role, operation["x-moonhive-role"], r.method .. " " .. r.pattern)
      if r.role == "public" then
        assert.same({ {} }, operation.security)
      else
        assert.same({ { bearer = { r.role } } }, operation.security)
        for _, status in ipairs({ "401", "403", "429" }) do
          assert.equal("#/components/schemas/Error",
                       operation.responses[status].content["application/json"].schema["$ref"])
        end
      end
    end
  end)

  it("documents no method a path does not answer", function()
    local routed = {}
    for _, r in ipairs(routes) do routed[r.method .. " " .. r.pattern] = true end
    for path, item in pairs(doc.paths) do
      for m in pairs(item) do
        local key = assert(METHODS[m], "not an HTTP method: " .. m) .. " " .. path
        assert(routed[key], key .. " is documented but the router does not answer it")
      end
    end
  end)
end)
