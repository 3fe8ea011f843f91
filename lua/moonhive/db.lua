-- moonhive.db — the host's SQLite database ($MOONHIVE_DATA/moonhive.db),
-- opened once per process, with its schema migrated by PRAGMA user_version.
-- Every runtime module that persists something (cache, runs, memory) takes
-- its connection from here. Writes are group-committed: those of one loop
-- turn share one transaction, committed at the turn's end (db:group_commit,
-- host/store_group.c); a write returns before it is durable, and a caller
-- that must know it is durable waits with db:committed().

local host = require "host"
local store = require "store"

local _M = {}

-- Each step moves the schema one version up; never edit a step that shipped.
local migrations = {
  -- 1: the model-response cache
  [[CREATE TABLE IF NOT EXISTS llm_cache (
      key TEXT PRIMARY KEY,
      response TEXT NOT NULL,
      created_at INTEGER NOT NULL)]],
  -- 2: recorded runs and their events
  [[CREATE TABLE runs (
      id TEXT PRIMARY KEY,
      agent TEXT NOT NULL,
      status TEXT NOT NULL,
      input TEXT,
      output TEXT,
      error TEXT,
      started_at REAL NOT NULL,
      finished_at REAL,
      tokens_in INTEGER NOT NULL DEFAULT 0,
      tokens_out INTEGER NOT NULL DEFAULT 0,
      cost REAL NOT NULL DEFAULT 0);
    CREATE INDEX runs_started ON runs(started_at);
    CREATE TABLE run_events (
      run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
      seq INTEGER NOT NULL,
      at REAL NOT NULL,
      kind TEXT NOT NULL,
      agent TEXT,
      data TEXT,
      PRIMARY KEY (run_id, seq))]],
  -- 3: episodic and long-term memory, searchable by FTS5 (bm25)
  [[CREATE TABLE memories (
      id INTEGER PRIMARY KEY,
      agent TEXT NOT NULL,
      namespace TEXT NOT NULL,
      kind TEXT NOT NULL,
      text TEXT NOT NULL,
      metadata TEXT,
      embedding TEXT,
      created_at REAL NOT NULL);
    CREATE INDEX memories_scope ON memories(agent, namespace, created_at);
    CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='id');
    CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
      INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
      INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END]],
  -- 4: durable workflow runs (moonhive.store.sqlite): a run's kind and
  -- version, the step journal, stored workflow sources, signals
  [[ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent';
    ALTER TABLE runs ADD COLUMN version TEXT;
    CREATE INDEX runs_kind_status ON runs(kind, status);
    CREATE TABLE workflow_versions (
      hash TEXT PRIMARY KEY,
      path TEXT,
      source TEXT NOT NULL,
      created_at REAL NOT NULL);
    CREATE TABLE journal (
      run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
      step TEXT NOT NULL,
      pos INTEGER NOT NULL,
      kind TEXT NOT NULL,
      name TEXT,
      args TEXT,
      status TEXT NOT NULL,
      result TEXT,
      error TEXT,
      memory TEXT,
      attempts INTEGER NOT NULL DEFAULT 1,
      at REAL NOT NULL,
      PRIMARY KEY (run_id, step));
    CREATE TABLE signals (
      id INTEGER PRIMARY KEY,
      run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
      name TEXT NOT NULL,
      payload TEXT,
      sent_at REAL NOT NULL,
      taken_at REAL);
    CREATE INDEX signals_waiting ON signals(run_id, name, taken_at)]],
  -- 5: hot reload: the version (SHA-256) of the agent file each journaled
  -- wf:call ran; its text is in workflow_versions
  [[ALTER TABLE journal ADD COLUMN version TEXT]],
  -- 6: tracing (moonhive trace): the run that started a run and, for the
  -- agent run of a workflow step, that step's id; when a journaled step started
  [[ALTER TABLE runs ADD COLUMN parent_run TEXT;
    ALTER TABLE runs ADD COLUMN parent_step TEXT;
    CREATE INDEX runs_parent ON runs(parent_run);
    ALTER TABLE journal ADD COLUMN started_at REAL]],
  -- 7: a workflow run's lease (moonhive.store.sqlite): which process
  -- executes it, until when
  [[ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_until REAL]],
  -- 8: the service's API keys (only a SHA-256 of each key) and its audit log
  [[CREATE TABLE api_keys (
      id TEXT PRIMARY KEY,
      hash TEXT NOT NULL,
      role TEXT NOT NULL,
      name TEXT,
      created_at REAL NOT NULL,
      last_used_at REAL,
      revoked_at REAL);
    CREATE TABLE audit_log (
      id INTEGER PRIMARY KEY,
      at REAL NOT NULL,
      principal TEXT NOT NULL,
      role TEXT,
      method TEXT NOT NULL,
      path TEXT NOT NULL,
      route TEXT,
      status INTEGER NOT NULL,
      remote TEXT);
    CREATE INDEX audit_at ON audit_log(at)]],
  -- 9: running totals for GET /metrics, so a scrape reads a few small rows
  -- whatever the number of runs (moonhive.tally): runs by kind and status,
  -- kept by triggers whatever code writes runs; model calls and tool
  -- results, added to as they happen
  [[CREATE TABLE run_counts (
      kind TEXT NOT NULL,
      status TEXT NOT NULL,
      n INTEGER NOT NULL,
      PRIMARY KEY (kind, status)) WITHOUT ROWID;
    INSERT INTO run_counts SELECT kind, status, count(*) FROM runs GROUP BY kind, status;
    CREATE TRIGGER run_counts_insert AFTER INSERT ON runs BEGIN
      INSERT INTO run_counts VALUES (new.kind, new.status, 1)
        ON CONFLICT (kind, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_update AFTER UPDATE OF kind, status ON runs
      WHEN old.kind IS NOT new.kind OR old.status IS NOT new.status BEGIN
      UPDATE run_counts SET n = n - 1 WHERE kind = old.kind AND status = old.status;
      INSERT INTO run_counts VALUES (new.kind, new.status, 1)
        ON CONFLICT (kind, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_delete AFTER DELETE ON runs BEGIN
      UPDATE run_counts SET n = n - 1 WHERE kind = old.kind AND status = old.status;
    END;
    CREATE TABLE model_usage (
      provider TEXT NOT NULL,
      model TEXT NOT NULL,
      calls INTEGER NOT NULL DEFAULT 0,
      errors INTEGER NOT NULL DEFAULT 0,
      cache_hits INTEGER NOT NULL DEFAULT 0,
      tokens_in INTEGER NOT NULL DEFAULT 0,
      tokens_out INTEGER NOT NULL DEFAULT 0,
      cost REAL NOT NULL DEFAULT 0,
      PRIMARY KEY (provider, model)) WITHOUT ROWID;
    CREATE TABLE tool_usage (
      tool TEXT NOT NULL,
      ok INTEGER NOT NULL,
      calls INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (tool, ok)) WITHOUT ROWID]],
  -- 10: the latest top-level runs (GET /v1/runs, `moonhive runs`) read from
  -- an index in order, not sorted out of every run (45 ms at 100k runs)
  [[CREATE INDEX runs_top ON runs(parent_run, started_at)]],
  -- 11: a workflow step's model and tool calls are events of the workflow
  -- run itself, tagged with the step's id and the attempt's number (no
  -- agent run per step: that cost two writes of runs and its indexes per
  -- step); runs_parent is the first column of runs_top, so it goes
  [[ALTER TABLE run_events ADD COLUMN step TEXT;
    ALTER TABLE run_events ADD COLUMN attempt INTEGER;
    DROP INDEX runs_parent]],
  -- 12: a journaled step carries the usage of its model calls, and a
  -- workflow run's row gets their sum once, when it finishes: a step no
  -- longer rewrites the run's row (1,000 concurrent runs scatter their rows
  -- over the whole table, so each step dirtied a page of its own)
  [[ALTER TABLE journal ADD COLUMN tokens_in INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN tokens_out INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN cost REAL NOT NULL DEFAULT 0]],
  -- 13: a journaled step is its run's "step_done" event itself: seq is its
  -- number among the run's events (moonhive.runs reads run_events and these
  -- entries as one list). NULL on entries journaled before, whose
  -- step_done is a row of run_events.
  [[ALTER TABLE journal ADD COLUMN seq INTEGER]],
}

local db, failure

-- The open database, or nil and why not (reported once per process).
function _M.get()
  if db then return db end
  if failure then return nil, failure end
  local d, err = store.open(host.data_dir() .. "/moonhive.db")
  if not d then
    failure = err
    return nil, err
  end
  local ok, e = pcall(d.transaction, d, function(t)
    local v = t:user_version()
    for i = v + 1, #migrations do
      assert(t:exec(migrations[i]))
      t:user_version(i)
    end
  end)
  if ok then ok, e = d:group_commit() end
  if not ok then
    d:close()
    failure = "cannot prepare the database: " .. tostring(e)
    return nil, failure
  end
  db = d
  return db
end

return _M
