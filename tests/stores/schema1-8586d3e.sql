-- A state store written by planctl 8586d3e (state schema 1), by:
--   OLD_TOKEN=s3cr3t-value planctl apply old.yaml --state state.db --var fail=yes --var labels=blue --no-rollback
-- with old.yaml as in tests/test_compat.py (OLD_PLAN). Run 20261130-203207-24bd4f STOPPED
-- with leftovers base, file[a], file[b] (out/base/a and out/base/b); 'sqlite3 state.db .dump'.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_file TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    snapshot TEXT NOT NULL,
    variables TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    error TEXT
);
INSERT INTO runs VALUES('20261130-203207-24bd4f','upgraded','old.yaml','STOPPED',1796070727.3770163058,1796070727.4492704868,'{"name": "upgraded", "description": "Recorded by planctl 8586d3e (state schema 1).", "vars": {"items": ["a", "b"], "fail": "no", "enable_extra": "yes", "labels": []}, "secrets": {"token": {"env": "OLD_TOKEN"}}, "commands": [{"id": "base", "entity": "dir/base", "exists": {"command": ["test", "-d", "out/base"]}, "run": {"command": ["mkdir", "-p", "out/base"]}, "inverse": {"command": ["rm", "-rf", "out/base"]}, "children": [{"id": "file", "for_each": "{{ items }}", "as": "it", "entity": "file/{{ it }}", "exists": {"command": ["test", "-f", "out/base/{{ it }}"]}, "run": {"shell": "echo {{ token }} > out/base/{{ it }}"}, "inverse": {"command": ["rm", "-f", "out/base/{{ it }}"]}}]}, {"id": "extra", "needs": ["base"], "when": "enable_extra", "changes": false, "run": {"command": ["true"]}}, {"id": "last", "needs": ["extra"], "exists": {"command": ["false"]}, "run": {"shell": "echo {{ labels }}; test {{ fail }} = no"}, "inverse": {"command": ["true"]}}]}','{"items": ["a", "b"], "fail": true, "enable_extra": "yes", "labels": "blue"}','vm',10216,NULL);
CREATE TABLE commands (
    run_id TEXT NOT NULL REFERENCES runs(id),
    id TEXT NOT NULL,
    spec_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    parent TEXT,
    entity TEXT,
    status TEXT NOT NULL,
    execution_reason TEXT NOT NULL,
    changed INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    revert_attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT,
    result TEXT,
    outputs TEXT,
    error TEXT,
    started_at REAL,
    ended_at REAL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
INSERT INTO commands VALUES('20261130-203207-24bd4f','base','base',0,NULL,'dir/base','SUCCEEDED','REGULAR_FLOW',1,1,0,'{"action":"command","args":["mkdir","-p","out/base"]}','{"rc":0,"stdout":"","stderr":""}','{}',NULL,1796070727.3795073032,1796070727.4243335723);
INSERT INTO commands VALUES('20261130-203207-24bd4f','extra','extra',3,NULL,NULL,'SUCCEEDED','REGULAR_FLOW',1,1,0,'{"action":"command","args":["true"]}','{"rc":0,"stdout":"","stderr":""}','{}',NULL,1796070727.4245767592,1796070727.4319875239);
INSERT INTO commands VALUES('20261130-203207-24bd4f','file[a]','file',1,'base','file/a','SUCCEEDED','REGULAR_FLOW',1,1,0,'{"action":"shell","args":"echo *** > out/base/a"}','{"rc":0,"stdout":"","stderr":""}','{}',NULL,1796070727.412374258,1796070727.4236047268);
INSERT INTO commands VALUES('20261130-203207-24bd4f','file[b]','file',2,'base','file/b','SUCCEEDED','REGULAR_FLOW',1,1,0,'{"action":"shell","args":"echo *** > out/base/b"}','{"rc":0,"stdout":"","stderr":""}','{}',NULL,1796070727.4199266434,1796070727.4242765903);
INSERT INTO commands VALUES('20261130-203207-24bd4f','last','last',4,NULL,NULL,'FAILED','REGULAR_FLOW',NULL,1,0,'{"action":"shell","args":"echo blue; test True = no"}',NULL,NULL,'exit status 1',1796070727.4406323433,1796070727.448978424);
CREATE TABLE async_tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    command_id TEXT NOT NULL,
    execution_reason TEXT NOT NULL,
    entity TEXT,
    handle TEXT NOT NULL,
    spec TEXT,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, command_id, execution_reason)
) WITHOUT ROWID;
CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    command_id TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO events VALUES('20261130-203207-24bd4f',1,1796070727.3772616386,'run',NULL,'{"status":"RUNNING","plan":"upgraded","commands":5,"version":1}');
INSERT INTO events VALUES('20261130-203207-24bd4f',2,1796070727.3795237541,'command','base','{"status":"STARTING","previous":"PENDING","execution_reason":"REGULAR_FLOW","entity":"dir/base"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',3,1796070727.3830955028,'command','base','{"status":"RUNNING","previous":"STARTING","execution_reason":"REGULAR_FLOW","entity":"dir/base"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',4,1796070727.412399292,'command','file[a]','{"status":"STARTING","previous":"PENDING","execution_reason":"REGULAR_FLOW","entity":"file/a"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',5,1796070727.4199497699,'command','file[b]','{"status":"STARTING","previous":"PENDING","execution_reason":"REGULAR_FLOW","entity":"file/b"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',6,1796070727.4237225055,'command','file[a]','{"status":"SUCCEEDED","previous":"STARTING","execution_reason":"REGULAR_FLOW","entity":"file/a"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',7,1796070727.4242877959,'command','file[b]','{"status":"SUCCEEDED","previous":"STARTING","execution_reason":"REGULAR_FLOW","entity":"file/b"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',8,1796070727.4243390559,'command','base','{"status":"SUCCEEDED","previous":"RUNNING","execution_reason":"REGULAR_FLOW","entity":"dir/base"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',9,1796070727.4246149062,'command','extra','{"status":"STARTING","previous":"PENDING","execution_reason":"REGULAR_FLOW","entity":null}');
INSERT INTO events VALUES('20261130-203207-24bd4f',10,1796070727.4320087432,'command','extra','{"status":"SUCCEEDED","previous":"STARTING","execution_reason":"REGULAR_FLOW","entity":null}');
INSERT INTO events VALUES('20261130-203207-24bd4f',11,1796070727.4406480789,'command','last','{"status":"STARTING","previous":"PENDING","execution_reason":"REGULAR_FLOW","entity":null}');
INSERT INTO events VALUES('20261130-203207-24bd4f',12,1796070727.4489979744,'command','last','{"status":"FAILED","previous":"STARTING","execution_reason":"REGULAR_FLOW","entity":null,"error":"exit status 1"}');
INSERT INTO events VALUES('20261130-203207-24bd4f',13,1796070727.4492499828,'run',NULL,'{"status":"STOPPED","leftovers":[{"command":"base","entity":"dir/base","status":"SUCCEEDED","reason":"changed by the run"},{"command":"file[a]","entity":"file/a","status":"SUCCEEDED","reason":"changed by the run"},{"command":"file[b]","entity":"file/b","status":"SUCCEEDED","reason":"changed by the run"},{"command":"last","entity":null,"status":"FAILED","reason":"may exist"}]}');
CREATE TABLE locks (
    entity TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
INSERT INTO locks VALUES('dir/base','20261130-203207-24bd4f','vm',10216,1796070727.376884222,0.0);
INSERT INTO locks VALUES('file/a','20261130-203207-24bd4f','vm',10216,1796070727.376884222,0.0);
INSERT INTO locks VALUES('file/b','20261130-203207-24bd4f','vm',10216,1796070727.376884222,0.0);
COMMIT;
PRAGMA user_version=1;
