// SQLite StateStore. WAL journal with synchronous=NORMAL: a committed transaction survives
// a process crash (kill -9), which is what a restarted controller needs; the last few
// transactions may be lost on power failure, which reconciliation with workers repairs.
//
// Commit runs all its batches in one transaction (the group commit of StateWriter). A batch
// that fails rolls the transaction back; the batches before and after it are then
// committed again without it, so one bad batch fails only itself (SQLite may end the whole
// transaction on SQLITE_FULL or an I/O error, so savepoints would not be enough).
// Statements are prepared once and kept.
//
// Checkpoints (copying the WAL into the database, with an fsync) are taken off the request
// path: automatic checkpoints are disabled on the writing connection and a background
// thread runs a PASSIVE checkpoint through its own connection once a second, so a lease
// write never waits for an fsync (warm Acquire p99, SPEC §8).
#include <sqlite3.h>

#include <fmt/format.h>

#include <map>
#include <thread>
#include <type_traits>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS deployments(name TEXT PRIMARY KEY, config_yaml TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL, failed_message TEXT NOT NULL DEFAULT '',
  last_error_code INTEGER NOT NULL DEFAULT 0, last_error_message TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS instances(instance_id TEXT PRIMARY KEY, deployment TEXT NOT NULL,
  worker_id TEXT NOT NULL, state TEXT NOT NULL, idle_since_unix_ms INTEGER NOT NULL,
  devices TEXT NOT NULL, bytes_per_device INTEGER NOT NULL,
  config_digest TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS leases(lease_id TEXT PRIMARY KEY, deployment TEXT NOT NULL,
  instance_id TEXT NOT NULL, expires_unix_ms INTEGER NOT NULL, ttl_seconds REAL NOT NULL)
  WITHOUT ROWID;
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
    for (auto& [sql, st] : statements_) sqlite3_finalize(st);
    sqlite3_close(db_);
  }

  absl::Status Init(const SqliteStateStoreOptions& options) {
    {
      absl::MutexLock lock(&mu_);
      for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=NORMAL;",
                              "PRAGMA busy_timeout=5000;", "PRAGMA wal_autocheckpoint=0;"}) {
        absl::Status s = ExecLocked(sql);
        if (!s.ok()) return s;
      }
      if (options.max_page_count > 0) {
        std::string sql = fmt::format("PRAGMA max_page_count={};", options.max_page_count);
        absl::Status s = ExecLocked(sql.c_str());
        if (!s.ok()) return s;
      }
      absl::Status schema = ExecLocked(kSchema);
      if (!schema.ok()) return schema;
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
      // Databases written before the failed state was persisted lack its columns.
      bool has_failed = false;
      s = Query("PRAGMA table_info(deployments)", [&](sqlite3_stmt* st) {
        has_failed |= Text(st, 1) == "failed_message";
      });
      if (!s.ok()) return s;
      if (!has_failed) {
        s = ExecLocked(
            "ALTER TABLE deployments ADD COLUMN failed_message TEXT NOT NULL DEFAULT '';"
            "ALTER TABLE deployments ADD COLUMN last_error_code INTEGER NOT NULL DEFAULT 0;"
            "ALTER TABLE deployments ADD COLUMN last_error_message TEXT NOT NULL DEFAULT '';");
        if (!s.ok()) return s;
      }
    }
    checkpointer_ = std::thread([this] { CheckpointLoop(); });
    return absl::OkStatus();
  }

  std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) override {
    absl::MutexLock lock(&mu_);
    std::vector<absl::Status> out(batches.size());
    std::vector<size_t> todo(batches.size());
    for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
    while (!todo.empty()) {
      absl::Status s = ExecLocked("BEGIN IMMEDIATE");
      if (!s.ok()) {
        for (size_t i : todo) out[i] = s;
        return out;
      }
      size_t failed = todo.size();
      for (size_t k = 0; k < todo.size() && failed == todo.size(); ++k) {
        for (const StateWrite& w : batches[todo[k]]) {
          s = ApplyLocked(w);
          if (!s.ok()) {
            failed = k;
            break;
          }
        }
      }
      if (failed < todo.size()) {
        RollbackLocked();
        out[todo[failed]] = s;
        todo.erase(todo.begin() + static_cast<std::ptrdiff_t>(failed));
        continue;  // the others again, without the failed one
      }
      s = ExecLocked("COMMIT");
      if (!s.ok()) {
        RollbackLocked();
        for (size_t i : todo) out[i] = s;
      }
      return out;
    }
    return out;
  }

  absl::StatusOr<StateSnapshot> Load() override {
    absl::MutexLock lock(&mu_);
    StateSnapshot snap;
    absl::Status s = Query(
        "SELECT name, config_yaml, created_unix_ms, failed_message, last_error_code, "
        "last_error_message FROM deployments ORDER BY name",
        [&](sqlite3_stmt* st) {
      snap.deployments.push_back({Text(st, 0), Text(st, 1), sqlite3_column_int64(st, 2),
                                  Text(st, 3), static_cast<int32_t>(sqlite3_column_int64(st, 4)),
                                  Text(st, 5)});
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

  // A full disk, an I/O error or a busy database may pass: UNAVAILABLE (retry later).
  absl::Status Error(const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string msg = fmt::format("state store {}: {}: {}", path_, what, sqlite3_errmsg(db_));
    switch (sqlite3_extended_errcode(db_) & 0xff) {
      case SQLITE_FULL:
      case SQLITE_IOERR:
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
      case SQLITE_READONLY:
      case SQLITE_CANTOPEN:
      case SQLITE_NOMEM:
        return absl::UnavailableError(msg);
      default:
        return absl::InternalError(msg);
    }
  }

  void RollbackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // SQLite may have rolled back already (SQLITE_FULL, I/O errors).
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  absl::Status ApplyLocked(const StateWrite& write) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::visit(
        [&](const auto& w) -> absl::Status {
          using T = std::decay_t<decltype(w)>;
          if constexpr (std::is_same_v<T, DeploymentRecord>) {
            return RunLocked(
                "INSERT OR REPLACE INTO deployments(name, config_yaml, created_unix_ms, "
                "failed_message, last_error_code, last_error_message) VALUES(?,?,?,?,?,?)",
                {w.name, w.config_yaml, w.created_unix_ms, w.failed_message,
                 static_cast<int64_t>(w.last_error_code), w.last_error_message});
          } else if constexpr (std::is_same_v<T, DeploymentDeletion>) {
            for (const char* sql : {"DELETE FROM leases WHERE deployment=?",
                                    "DELETE FROM instances WHERE deployment=?",
                                    "DELETE FROM deployments WHERE name=?"}) {
              absl::Status s = RunLocked(sql, {w.name});
              if (!s.ok()) return s;
            }
            return absl::OkStatus();
          } else if constexpr (std::is_same_v<T, InstanceRecord>) {
            return RunLocked("INSERT OR REPLACE INTO instances VALUES(?,?,?,?,?,?,?,?)",
                             {w.instance_id, w.deployment, w.worker_id, w.state,
                              w.idle_since_unix_ms, w.devices,
                              static_cast<int64_t>(w.bytes_per_device), w.config_digest});
          } else if constexpr (std::is_same_v<T, InstanceDeletion>) {
            absl::Status s = RunLocked("DELETE FROM leases WHERE instance_id=?", {w.instance_id});
            if (!s.ok()) return s;
            return RunLocked("DELETE FROM instances WHERE instance_id=?", {w.instance_id});
          } else if constexpr (std::is_same_v<T, LeaseRecord>) {
            return RunLocked("INSERT OR REPLACE INTO leases VALUES(?,?,?,?,?)",
                             {w.lease_id, w.deployment, w.instance_id, w.expires_unix_ms,
                              w.ttl_seconds});
          } else if constexpr (std::is_same_v<T, LeaseDeletion>) {
            return RunLocked("DELETE FROM leases WHERE lease_id=?", {w.lease_id});
          } else if constexpr (std::is_same_v<T, WorkerRecord>) {
            return RunLocked("INSERT OR REPLACE INTO workers VALUES(?,?,?,?)",
                             {w.worker_id, w.address, w.info, w.last_heartbeat_unix_ms});
          } else {
            static_assert(std::is_same_v<T, WorkerDeletion>);
            return RunLocked("DELETE FROM workers WHERE worker_id=?", {w.worker_id});
          }
        },
        write);
  }

  // The statement for `sql`, prepared on first use and reset for the next.
  absl::StatusOr<sqlite3_stmt*> PreparedLocked(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return Error(sql);
    statements_.emplace(sql, st);
    return st;
  }

  absl::Status ExecLocked(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(sql);
    return absl::OkStatus();
  }

  absl::Status RunLocked(const char* sql, const std::vector<Value>& values)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<sqlite3_stmt*> prepared = PreparedLocked(sql);
    if (!prepared.ok()) return prepared.status();
    sqlite3_stmt* st = *prepared;
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
    absl::Status status = rc == SQLITE_DONE ? absl::OkStatus() : Error(sql);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return status;
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
  // Keyed by the SQL text's address: every statement is a string literal of this file.
  std::map<const char*, sqlite3_stmt*> statements_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(
    const std::string& path, const SqliteStateStoreOptions& options) {
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
  absl::Status s = store->Init(options);
  if (!s.ok()) return s;
  return store;
}

}  // namespace loadstar::daemon
