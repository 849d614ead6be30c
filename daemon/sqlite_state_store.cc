// SQLite StateStore. WAL journal with synchronous=NORMAL: a committed transaction survives
// a process crash (kill -9), which is what a restarted controller needs; the last few
// transactions may be lost on power failure, which reconciliation with workers repairs.
//
// Checkpoints (copying the WAL into the database, with an fsync) are taken off the request
// path: automatic checkpoints are disabled on the writing connection and a background
// thread runs a PASSIVE checkpoint through its own connection once a second, so a lease
// write never waits for an fsync (warm Acquire p99, SPEC §8).
#include <sqlite3.h>

#include <fmt/format.h>

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS deployments(name TEXT PRIMARY KEY, config_yaml TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances(instance_id TEXT PRIMARY KEY, deployment TEXT NOT NULL,
  worker_id TEXT NOT NULL, state TEXT NOT NULL, idle_since_unix_ms INTEGER NOT NULL,
  devices TEXT NOT NULL, bytes_per_device INTEGER NOT NULL,
  config_digest TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS leases(lease_id TEXT PRIMARY KEY, deployment TEXT NOT NULL,
  instance_id TEXT NOT NULL, expires_unix_ms INTEGER NOT NULL, ttl_seconds REAL NOT NULL);
CREATE TABLE IF NOT EXISTS workers(worker_id TEXT PRIMARY KEY, address TEXT NOT NULL,
  info BLOB NOT NULL, last_heartbeat_unix_ms INTEGER NOT NULL);
)sql";

// A bound value: text/blob or integer or real.
struct Value {
  enum Kind { kText, kInt, kReal } kind;
  std::string text;
  int64_t i = 0;
  double r = 0;
  Value(const std::string& s) : kind(kText), text(s) {}   // NOLINT
  Value(int64_t v) : kind(kInt), i(v) {}                   // NOLINT
  Value(double v) : kind(kReal), r(v) {}                   // NOLINT
};

class SqliteStateStore : public StateStore {
 public:
  SqliteStateStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStateStore() override {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      stopping_ = true;
    }
    if (checkpointer_.joinable()) checkpointer_.join();
    absl::MutexLock lock(&mu_);
    sqlite3_close(db_);
  }

  absl::Status Init() {
    {
      absl::MutexLock lock(&mu_);
      for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=NORMAL;",
                              "PRAGMA busy_timeout=5000;", "PRAGMA wal_autocheckpoint=0;",
                              kSchema}) {
        absl::Status s = ExecLocked(sql);
        if (!s.ok()) return s;
      }
      // Databases written before rolling updates lack the column: add it (an instance
      // without a digest counts as loaded with its deployment's current config).
      bool has_digest = false;
      absl::Status s = Query("PRAGMA table_info(instances)", [&](sqlite3_stmt* st) {
        has_digest |= Text(st, 1) == "config_digest";
      });
      if (!s.ok()) return s;
      if (!has_digest) {
        s = ExecLocked("ALTER TABLE instances ADD COLUMN config_digest TEXT NOT NULL DEFAULT '';");
        if (!s.ok()) return s;
      }
    }
    checkpointer_ = std::thread([this] { CheckpointLoop(); });
    return absl::OkStatus();
  }

  absl::Status PutDeployment(const DeploymentRecord& r) override {
    return Run("INSERT OR REPLACE INTO deployments VALUES(?,?,?)",
               {r.name, r.config_yaml, r.created_unix_ms});
  }
  absl::Status DeleteDeployment(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    // One transaction: a crash never leaves leases of a deleted deployment behind.
    absl::Status s = ExecLocked("BEGIN");
    if (!s.ok()) return s;
    for (const char* sql : {"DELETE FROM leases WHERE deployment=?",
                            "DELETE FROM instances WHERE deployment=?",
                            "DELETE FROM deployments WHERE name=?"}) {
      s = RunLocked(sql, {name});
      if (!s.ok()) {
        ExecLocked("ROLLBACK").IgnoreError();
        return s;
      }
    }
    return ExecLocked("COMMIT");
  }
  absl::Status PutInstance(const InstanceRecord& r) override {
    return Run("INSERT OR REPLACE INTO instances VALUES(?,?,?,?,?,?,?,?)",
               {r.instance_id, r.deployment, r.worker_id, r.state, r.idle_since_unix_ms,
                r.devices, static_cast<int64_t>(r.bytes_per_device), r.config_digest});
  }
  absl::Status DeleteInstance(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    absl::Status s = ExecLocked("BEGIN");
    if (!s.ok()) return s;
    s = RunLocked("DELETE FROM leases WHERE instance_id=?", {id});
    if (s.ok()) s = RunLocked("DELETE FROM instances WHERE instance_id=?", {id});
    if (!s.ok()) {
      ExecLocked("ROLLBACK").IgnoreError();
      return s;
    }
    return ExecLocked("COMMIT");
  }
  absl::Status PutLease(const LeaseRecord& r) override {
    return Run("INSERT OR REPLACE INTO leases VALUES(?,?,?,?,?)",
               {r.lease_id, r.deployment, r.instance_id, r.expires_unix_ms, r.ttl_seconds});
  }
  absl::Status DeleteLease(const std::string& id) override {
    return Run("DELETE FROM leases WHERE lease_id=?", {id});
  }
  absl::Status PutWorker(const WorkerRecord& r) override {
    return Run("INSERT OR REPLACE INTO workers VALUES(?,?,?,?)",
               {r.worker_id, r.address, r.info, r.last_heartbeat_unix_ms});
  }
  absl::Status DeleteWorker(const std::string& id) override {
    return Run("DELETE FROM workers WHERE worker_id=?", {id});
  }

  absl::StatusOr<StateSnapshot> Load() override {
    absl::MutexLock lock(&mu_);
    StateSnapshot snap;
    absl::Status s = Query("SELECT * FROM deployments ORDER BY name", [&](sqlite3_stmt* st) {
      snap.deployments.push_back({Text(st, 0), Text(st, 1), sqlite3_column_int64(st, 2)});
    });
    if (s.ok()) {
      s = Query("SELECT * FROM instances ORDER BY instance_id", [&](sqlite3_stmt* st) {
        snap.instances.push_back({Text(st, 0), Text(st, 1), Text(st, 2), Text(st, 3),
                                  sqlite3_column_int64(st, 4), Text(st, 5),
                                  static_cast<uint64_t>(sqlite3_column_int64(st, 6)),
                                  Text(st, 7)});
      });
    }
    if (s.ok()) {
      s = Query("SELECT * FROM leases ORDER BY lease_id", [&](sqlite3_stmt* st) {
        snap.leases.push_back({Text(st, 0), Text(st, 1), Text(st, 2),
                               sqlite3_column_int64(st, 3), sqlite3_column_double(st, 4)});
      });
    }
    if (s.ok()) {
      s = Query("SELECT * FROM workers ORDER BY worker_id", [&](sqlite3_stmt* st) {
        snap.workers.push_back(
            {Text(st, 0), Text(st, 1), Text(st, 2), sqlite3_column_int64(st, 3)});
      });
    }
    if (!s.ok()) return s;
    return snap;
  }

 private:
  static std::string Text(sqlite3_stmt* st, int col) {
    const void* data = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), n);
  }

  absl::Status Error(const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::InternalError(fmt::format("state store: {}: {}", what, sqlite3_errmsg(db_)));
  }

  absl::Status ExecLocked(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(sql);
    return absl::OkStatus();
  }

  absl::Status Run(const char* sql, const std::vector<Value>& values) {
    absl::MutexLock lock(&mu_);
    return RunLocked(sql, values);
  }

  absl::Status RunLocked(const char* sql, const std::vector<Value>& values)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return Error(sql);
    for (size_t i = 0; i < values.size(); ++i) {
      const Value& v = values[i];
      int col = static_cast<int>(i + 1);
      if (v.kind == Value::kText) {
        sqlite3_bind_blob(st, col, v.text.data(), static_cast<int>(v.text.size()),
                          SQLITE_TRANSIENT);
      } else if (v.kind == Value::kInt) {
        sqlite3_bind_int64(st, col, v.i);
      } else {
        sqlite3_bind_double(st, col, v.r);
      }
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Error(sql);
    return absl::OkStatus();
  }

  template <typename Fn>
  absl::Status Query(const char* sql, Fn&& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return Error(sql);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) row(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Error(sql);
    return absl::OkStatus();
  }

  void CheckpointLoop() {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      return;
    }
    sqlite3_busy_timeout(db, 1000);
    absl::MutexLock lock(&checkpoint_mu_);
    while (!checkpoint_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1))) {
      checkpoint_mu_.Unlock();
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      checkpoint_mu_.Lock();
    }
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    sqlite3_close(db);
  }

  absl::Mutex mu_;
  sqlite3* db_ ABSL_PT_GUARDED_BY(mu_);
  const std::string path_;
  absl::Mutex checkpoint_mu_;
  bool stopping_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  std::thread checkpointer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(fmt::format("state store {}: {}", path, msg));
  }
  auto store = std::make_unique<SqliteStateStore>(db, path);
  absl::Status s = store->Init();
  if (!s.ok()) return s;
  return store;
}

}  // namespace loadstar::daemon
