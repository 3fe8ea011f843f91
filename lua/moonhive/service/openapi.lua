-- moonhive.service.openapi — GET /v1/openapi.json: the HTTP API described
-- as an OpenAPI 3.1 document, built here as a Lua table and encoded once.
-- Every route the router answers must appear here with the same methods and
-- role (tests/spec/unit/openapi_spec.lua fails otherwise); each operation
-- names the role it needs in `x-moonhive-role` (public, viewer, operator,
-- admin). The document itself is public, like /health: it holds no data.

local cjson = require "cjson"

local _M = {}

local function ref(name) return { ["$ref"] = "#/components/schemas/" .. name } end
local function json(schema) return { ["application/json"] = { schema = schema } } end
local function nullable(t) return { type = { t, "null" } } end
local function list_of(key, item)
  return { type = "object", required = { key }, properties = { [key] = { type = "array", items = item } } }
end

local ERRORS = {
  ["400"] = "The request is malformed: a bad query parameter or body.",
  ["401"] = "No credentials, or credentials that are not valid (the answer has WWW-Authenticate).",
  ["403"] = "The caller's role is below the one this operation needs.",
  ["404"] = "No such run, agent or workflow.",
  ["409"] = "The run is in the wrong state for this (finished already, or not a workflow).",
  ["429"] = "The caller's rate limit is exceeded (the answer has Retry-After).",
}

local function error_response(status)
  return { description = ERRORS[status], content = json(ref("Error")) }
end

local ROLE_TEXT = {
  public = "Public: no credentials needed.",
  viewer = "Needs the viewer role (or higher).",
  operator = "Needs the operator role (or higher).",
  admin = "Needs the admin role.",
}

-- An operation: role, summary, description, the responses by status, and
-- optionally parameters, requestBody and the error statuses it may answer.
local function op(o)
  local responses = o.responses
  for _, s in ipairs(o.errors or {}) do responses[s] = error_response(s) end
  if o.role ~= "public" then
    for _, s in ipairs({ "401", "403", "429" }) do responses[s] = error_response(s) end
  end
  return {
    summary = o.summary,
    description = o.description and (o.description .. "\n\n" .. ROLE_TEXT[o.role]) or ROLE_TEXT[o.role],
    operationId = o.id, tags = { o.tag }, parameters = o.parameters, requestBody = o.body,
    responses = responses, ["x-moonhive-role"] = o.role,
    -- [{}]: no credentials; else a bearer credential whose role is at least o.role
    security = o.role == "public" and { {} } or { { bearer = { o.role } } },
  }
end

local function path_param(name, description)
  return { name = name, ["in"] = "path", required = true, description = description, schema = { type = "string" } }
end

local function limit_param(default)
  return { name = "limit", ["in"] = "query", description = "How many entries, newest first.",
           schema = { type = "integer", minimum = 1, maximum = 1000, default = default } }
end

-- A GET answering {key: [item, ...]} (newest first, with ?limit, when
-- o.limit is its default).
local function listing(o)
  return op {
    role = o.role or "viewer", tag = o.tag, id = o.id, summary = o.summary,
    parameters = o.limit and { limit_param(o.limit) } or nil,
    responses = { ["200"] = { description = o.limit and "Newest first." or "All of them.",
                              content = json(list_of(o.key, ref(o.item))) } },
    errors = o.limit and { "400" } or nil,
  }
end

local RUN_ID = path_param("id", "The run's id, or a unique prefix of it.")
local SSE = { ["text/event-stream"] = { schema = { type = "string" } } }

local STATUSES = { "pending", "running", "waiting", "succeeded", "failed", "cancelled" }

local schemas = {
  Error = {
    type = "object", required = { "error" },
    description = "Every error the service sends, from the transport or a handler.",
    properties = { error = { type = "object", required = { "status", "message" }, properties = {
      status = { type = "integer", description = "The HTTP status again." },
      message = { type = "string", description = "One sentence: what failed and what to do." } } } },
  },
  Health = {
    type = "object", required = { "status", "version" },
    properties = { status = { type = "string", const = "ok" }, version = { type = "string" } },
  },
  RunSummary = {
    type = "object", required = { "id", "kind", "status", "started_at" },
    properties = {
      id = { type = "string" },
      kind = { type = "string", enum = { "agent", "workflow" } },
      agent = { type = "string", description = "The agent's (or the workflow's) name." },
      workflow = { type = "string", description = "The workflow's name, for a workflow run." },
      status = { type = "string", enum = STATUSES },
      version = { type = "string", description = "SHA-256 of the agent or workflow file the run started on." },
      started_at = { type = "number", description = "Unix time, seconds." },
      finished_at = { type = "number", description = "Unix time, seconds; absent while the run is unfinished." },
      tokens_in = { type = "integer" },
      tokens_out = { type = "integer" },
      cost = { type = "number", description = "US dollars." },
    },
  },
  Event = {
    type = "object", required = { "seq", "at", "kind" },
    properties = {
      seq = { type = "integer", description = "1, 2, ... within the run; the SSE event id." },
      at = { type = "number", description = "Unix time, seconds." },
      kind = { type = "string", description = "model_call, model_error, tool_call, tool_result, error, ..." },
      agent = { type = "string" },
      data = { description = "The event's JSON payload." },
      step = { type = "string", description = "In a workflow run: the step whose attempt made this call (\"2.1.1\")." },
      attempt = { type = "integer", description = "With step: the attempt's number, from 1." },
    },
  },
  Run = {
    allOf = { ref("RunSummary"), { type = "object", properties = {
      input = { description = "The run's input (any JSON)." },
      output = { description = "The run's output (any JSON), once it succeeded." },
      error = { type = "string" },
      parent_run = { type = "string", description = "The run that started this one." },
      parent_step = { type = "string", description = "The workflow step inside which this agent run was started." },
      events = { type = "array", items = ref("Event") },
      steps = { type = { "array", "null" }, items = { type = "object" },
                description = "A workflow run's journaled steps; null for an agent run." },
    } } },
  },
  RunStarted = {
    type = "object", required = { "run_id", "status", "links" },
    properties = {
      run_id = { type = "string" },
      status = { type = "string", const = "running" },
      links = { type = "object", properties = { run = { type = "string" }, events = { type = "string" } } },
    },
  },
  RunReport = {
    type = "object", required = { "run_id", "status" },
    description = "The finished run: output when it succeeded, error when not.",
    properties = {
      run_id = { type = "string" },
      status = { type = "string", enum = STATUSES },
      output = { description = "Any JSON." },
      error = { type = "string" },
    },
  },
  RunRequest = {
    type = "object",
    properties = { input = { description = "The run's input: any JSON." } },
  },
  Definition = {
    type = "object", required = { "name" },
    description = "An agent or workflow file as currently loaded.",
    properties = {
      name = { type = "string" },
      description = { type = "string" },
      file = { type = "string" },
      version = { type = "string", description = "SHA-256 of the file's current version." },
      loaded_at = { type = "number", description = "Unix time, seconds." },
      versions = { type = "integer", description = "How many versions have been loaded." },
      error = { type = "string", description = "The last load error; absent when the last load succeeded." },
      shipped = { type = "boolean", description = "Whether the file ships with moonhive." },
    },
  },
  DefinitionWithSource = {
    allOf = { ref("Definition"), { type = "object", properties = { source = { type = "string" } } } },
  },
  AuditEntry = {
    type = "object",
    properties = {
      id = { type = "integer" }, at = { type = "number" }, principal = { type = "string" },
      role = { type = "string" }, method = { type = "string" }, path = { type = "string" },
      route = { type = "string" }, status = { type = "integer" }, remote = { type = "string" },
    },
  },
  ChatRequest = {
    type = "object", required = { "model", "messages" },
    properties = {
      model = { type = "string", pattern = "^(agent|workflow):.+$", description = "agent:NAME or workflow:NAME." },
      messages = { type = "array", items = { type = "object", required = { "role" }, properties = {
        role = { type = "string" }, content = nullable("string") } } },
      stream = { type = "boolean", default = false },
    },
  },
  ChatCompletion = {
    type = "object", description = "An OpenAI chat.completion object.",
    properties = {
      id = { type = "string" }, object = { type = "string", const = "chat.completion" },
      created = { type = "integer" }, model = { type = "string" },
      choices = { type = "array", items = { type = "object", properties = {
        index = { type = "integer" }, finish_reason = { type = "string" },
        message = { type = "object", properties = { role = { type = "string" }, content = nullable("string") } } } } },
      usage = { type = "object", properties = {
        prompt_tokens = { type = "integer" }, completion_tokens = { type = "integer" },
        total_tokens = { type = "integer" } } },
    },
  },
}

-- GET /v1/agents/{name} and /v1/workflows/{name}
local function get_definition(kind)
  return op {
    role = "viewer", tag = kind .. "s", id = "get_" .. kind, summary = ("One %s, with its source"):format(kind),
    parameters = { path_param("name", ("The %s's name."):format(kind)) },
    responses = { ["200"] = { description = ("The %s."):format(kind), content = json(ref("DefinitionWithSource")) } },
    errors = { "404" },
  }
end

local function start_run(kind)
  return op {
    role = "operator", tag = kind .. "s", id = "start_" .. kind .. "_run",
    summary = ("Starts a run of the %s"):format(kind),
    description = "Answers 202 at once; with ?wait=true, 200 once the run has finished.",
    parameters = { path_param("name", ("The %s's name."):format(kind)),
                   { name = "wait", ["in"] = "query", description = "Wait for the run to finish.",
                     schema = { type = "boolean", default = false } } },
    body = { required = false, content = json(ref("RunRequest")) },
    responses = {
      ["202"] = { description = "The run started.", content = json(ref("RunStarted")) },
      ["200"] = { description = "The finished run (?wait=true).", content = json(ref("RunReport")) },
    },
    errors = { "400", "404" },
  }
end

local paths = {
  ["/health"] = { get = op {
    role = "public", tag = "service", id = "health", summary = "Liveness: 200 while the server runs",
    responses = { ["200"] = { description = "Up.", content = json(ref("Health")) } },
  } },
  ["/"] = { get = op {
    role = "public", tag = "service", id = "dashboard", summary = "The dashboard page",
    description = "An HTML page; it asks for a key, or takes one from the URL's #key=... fragment.",
    responses = { ["200"] = { description = "The page.",
                              content = { ["text/html"] = { schema = { type = "string" } } } } },
  } },
  ["/metrics"] = { get = op {
    role = "viewer", tag = "service", id = "metrics", summary = "Prometheus metrics",
    description = "The text exposition format 0.0.4; the metrics are listed in docs/api.md.",
    responses = { ["200"] = { description = "The metrics.",
                              content = { ["text/plain"] = { schema = { type = "string" } } } } },
  } },
  ["/v1/openapi.json"] = { get = op {
    role = "public", tag = "service", id = "openapi", summary = "This document",
    responses = { ["200"] = { description = "An OpenAPI 3.1 document.", content = json({ type = "object" }) } },
  } },
  ["/v1/runs"] = { get = listing {
    tag = "runs", id = "list_runs", summary = "The latest runs started by no other run",
    key = "runs", item = "RunSummary", limit = 20,
  } },
  ["/v1/runs/{id}"] = { get = op {
    role = "viewer", tag = "runs", id = "get_run", summary = "One run with its events (and a workflow's steps)",
    parameters = { RUN_ID },
    responses = { ["200"] = { description = "The run.", content = json(ref("Run")) } },
    errors = { "404" },
  } },
  ["/v1/runs/{id}/events"] = { get = op {
    role = "viewer", tag = "runs", id = "run_events", summary = "The run's events as Server-Sent Events, live",
    description = "Opens with `retry: 2000`, then `id: SEQ`, `event: KIND`, `data: {seq, at, kind, agent, data, step, attempt}` "
      .. "per event, ended by `event: end` with `data: {id, status}` once the run has finished. Resumable: "
      .. "Last-Event-ID (or ?after) gives only the later events.",
    parameters = { RUN_ID,
      { name = "Last-Event-ID", ["in"] = "header", description = "Send only events after this sequence number.",
        schema = { type = "integer", minimum = 0 } },
      { name = "after", ["in"] = "query", description = "Like Last-Event-ID.",
        schema = { type = "integer", minimum = 0 } } },
    responses = { ["200"] = { description = "The event stream.", content = SSE } },
    errors = { "400", "404" },
  } },
  ["/v1/runs/{id}/cancel"] = { post = op {
    role = "operator", tag = "runs", id = "cancel_run", summary = "Cancels an unfinished workflow run",
    parameters = { RUN_ID },
    responses = { ["200"] = { description = "Cancelled.", content = json({ type = "object", properties = {
      id = { type = "string" }, status = { type = "string", const = "cancelled" } } }) } },
    errors = { "404", "409" },
  } },
  ["/v1/runs/{id}/signals/{name}"] = { post = op {
    role = "operator", tag = "runs", id = "signal_run", summary = "Sends a signal to a workflow run",
    description = "The body, if any, is the signal's JSON payload, which wf:wait_signal(name) returns.",
    parameters = { RUN_ID, path_param("name", "The signal's name (approve, ...).") },
    body = { required = false, description = "Any JSON.", content = json({}) },
    responses = { ["202"] = { description = "Sent.", content = json({ type = "object", properties = {
      id = { type = "string" }, signal = { type = "string" } } }) } },
    errors = { "400", "404", "409" },
  } },
  ["/v1/audit"] = { get = listing {
    role = "admin", tag = "service", id = "audit", summary = "The audit log of mutating calls",
    key = "entries", item = "AuditEntry", limit = 100,
  } },
  ["/v1/agents"] = { get = listing {
    tag = "agents", id = "list_agents", summary = "The agents this server can run", key = "agents", item = "Definition",
  } },
  ["/v1/agents/{name}"] = { get = get_definition("agent") },
  ["/v1/agents/{name}/runs"] = { post = start_run("agent") },
  ["/v1/workflows"] = { get = listing {
    tag = "workflows", id = "list_workflows", summary = "The workflows this server can run",
    key = "workflows", item = "Definition",
  } },
  ["/v1/workflows/{name}"] = { get = get_definition("workflow") },
  ["/v1/workflows/{name}/runs"] = { post = start_run("workflow") },
  ["/v1/chat/completions"] = { post = op {
    role = "operator", tag = "chat", id = "chat_completions",
    summary = "OpenAI-compatible chat with an agent or workflow",
    description = "The model names what answers: agent:NAME or workflow:NAME. With stream=true the answer is "
      .. "Server-Sent Events of chat.completion.chunk objects, ended by `data: [DONE]`.",
    body = { required = true, content = json(ref("ChatRequest")) },
    responses = { ["200"] = { description = "The completion (or its stream).", content = {
      ["application/json"] = { schema = ref("ChatCompletion") }, ["text/event-stream"] = SSE["text/event-stream"] } } },
    errors = { "400", "404" },
  } },
}

-- The document, as a Lua table (version: the server's).
function _M.document(version)
  return {
    openapi = "3.1.0",
    info = {
      title = "moonhive", version = version or "0",
      description = "Runs AI agents and workflows over HTTP. Every error is {\"error\": {\"status\": N, "
        .. "\"message\": \"...\"}}. HEAD is accepted wherever GET is. Roles: viewer < operator < admin; "
        .. "each operation names the one it needs in x-moonhive-role.",
    },
    tags = { { name = "service" }, { name = "runs" }, { name = "agents" }, { name = "workflows" }, { name = "chat" } },
    paths = paths,
    components = {
      schemas = schemas,
      securitySchemes = { bearer = { type = "http", scheme = "bearer",
        description = "An API key (mh_<id>_<secret>) or a JWT signed with HS256; its role (viewer, operator, "
          .. "admin) must be at least the one an operation lists." } },
    },
  }
end

-- lua-cjson writes "/" as "\/"; both are JSON, the plain one reads better.
local function unescape_slashes(text)
  return (text:gsub("(\\*)\\/", function(bs) return #bs % 2 == 0 and bs .. "/" or nil end))
end

local encoded

-- The document as JSON text, encoded on first use.
function _M.json(version)
  encoded = encoded or unescape_slashes(cjson.encode(_M.document(version))) .. "\n"
  return encoded
end

return _M
