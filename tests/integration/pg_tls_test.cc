// PostgreSQL over TLS (TESTPLAN.md "Security checks"). Guarantee: with
// sslmode=verify-full crm-worker talks to a database only when the server
// proves, with a certificate from the CA the operator named, that it is the
// host the URL names; a refusal says why, and no outcome prints the
// password the URL carries.
//
// The checks run `crm-worker migrate` (the daemon's own conninfo building,
// connection and error reporting) against a cluster of this test's own:
// ssl = on with a server certificate for `localhost` from a throwaway CA
// made here with openssl, TCP only through hostssl with a password
// (scram-sha-256), loopback only. The shared cluster of the ctest fixture
// cannot be used: its settings are every other test's.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "tests/harness/harness.h"

namespace crm::test {
namespace {

namespace fs = std::filesystem;

// The password of the role crm-worker logs in as: a canary searched for in
// everything the worker prints.
constexpr const char* kPassword = "cnry-pgtls-5e0b9d";
constexpr const char* kRole = "crm_tls";
constexpr const char* kDatabase = "crmtls";

std::string pg_bin(const std::string& tool) {
  const char* bin = std::getenv("PG_BIN");
  return std::string(bin ? bin : "/usr/lib/postgresql/15/bin") + "/" + tool;
}

// PostgreSQL refuses to run as root; the tests run as root in CI (see
// scripts/pg.sh): then the cluster belongs to `postgres`.
bool as_root() { return ::geteuid() == 0; }

// Runs `argv` (as the postgres user if `as_postgres` and we are root) with a
// deadline; {exit code or -1, output}.
std::pair<int, std::string> run(std::vector<std::string> argv, const std::string& log_path,
                                bool as_postgres = false) {
  if (as_postgres && as_root()) {
    argv.insert(argv.begin(),
                {find_program("runuser", {"/usr/sbin", "/sbin"}), "-u", "postgres", "--"});
  }
  Process p(argv, {}, log_path);
  const auto code = p.wait(30s);
  return {code.value_or(-1), p.log()};
}

void give_to_postgres(const std::string& path, mode_t mode) {
  if (as_root()) {
    const std::string chown = find_program("chown");
    ASSERT_FALSE(chown.empty());
    ASSERT_EQ(run({chown, "postgres:", path}, path + ".chown.log").first, 0) << path;
    fs::remove(path + ".chown.log");
  }
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// A throwaway CA, a second unrelated one, and a server certificate for
// DNS:localhost (no IP address) signed by the first.
class Certificates {
 public:
  explicit Certificates(const std::string& dir) : dir_(dir) {}

  void make() {
    openssl_ = find_program("openssl");
    ASSERT_FALSE(openssl_.empty()) << "openssl is needed (scripts/install-deps.sh installs it)";
    // Our own configuration, so that the extensions do not depend on the
    // distribution's openssl.cnf.
    std::ofstream(file("openssl.cnf")) << "[req]\n"
                                          "distinguished_name = dn\n"
                                          "prompt = no\n"
                                          "[dn]\n"
                                          "CN = unused\n"
                                          "[ca]\n"
                                          "basicConstraints = critical, CA:TRUE\n"
                                          "keyUsage = critical, keyCertSign, cRLSign\n"
                                          "subjectKeyIdentifier = hash\n"
                                          "[server]\n"
                                          "basicConstraints = critical, CA:FALSE\n"
                                          "keyUsage = critical, digitalSignature, keyEncipherment\n"
                                          "extendedKeyUsage = serverAuth\n"
                                          "subjectAltName = DNS:localhost\n"
                                          "subjectKeyIdentifier = hash\n"
                                          "authorityKeyIdentifier = keyid\n";
    make_ca("ca", "/CN=crm-worker test CA");
    make_ca("other-ca", "/CN=crm-worker other test CA");
    openssl({"req", "-new", "-config", file("openssl.cnf"), "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-keyout",
             file("server.key"), "-out", file("server.csr")});
    openssl({"x509", "-req", "-in", file("server.csr"), "-CA", file("ca.crt"), "-CAkey",
             file("ca.key"), "-set_serial", "2", "-days", "2", "-extfile", file("openssl.cnf"),
             "-extensions", "server", "-out", file("server.crt")});
  }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

 private:
  void make_ca(const std::string& name, const std::string& subject) {
    openssl({"req", "-x509", "-config", file("openssl.cnf"), "-extensions", "ca", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", subject,
             "-keyout", file(name + ".key"), "-out", file(name + ".crt")});
  }
  void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), openssl_);
    const auto [code, out] = run(args, file("openssl.log"));
    ASSERT_EQ(code, 0) << out;
  }

  std::string dir_;
  std::string openssl_;
};

// A PostgreSQL 15 cluster with ssl = on, listening on 127.0.0.1 only, that
// accepts TCP connections only over TLS and with a password.
class TlsCluster {
 public:
  // `dir` must be enterable by the postgres user; the cluster lives in
  // dir/pg, which it owns.
  TlsCluster(const std::string& dir, const Certificates& certs) : dir_(dir + "/pg") {
    fs::create_directories(dir_);
    give_to_postgres(dir_, 0700);
    // The server reads its key as postgres and refuses one others can read.
    for (const char* f : {"server.crt", "server.key"}) {
      fs::copy_file(certs.file(f), dir_ + "/" + f);
      give_to_postgres(dir_ + "/" + f, 0600);
    }
  }
  ~TlsCluster() {
    if (started_)
      run({pg_bin("pg_ctl"), "stop", "-D", dir_ + "/data", "-m", "immediate", "-w", "-t", "30"},
          log_dir() + "/stop.log", true);
  }

  void start() {
    const auto [init, init_out] =
        run({pg_bin("initdb"), "-D", dir_ + "/data", "--username=postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync"},
            log_dir() + "/initdb.log", true);
    ASSERT_EQ(init, 0) << init_out;
    // The configuration files belong to postgres; root writes them through
    // its rights, then they are handed back.
    std::ofstream(dir_ + "/data/pg_hba.conf", std::ios::trunc)
        << "local all all trust\n"
           "hostssl all all 127.0.0.1/32 scram-sha-256\n";
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port();
      std::ofstream(dir_ + "/data/postgresql.auto.conf", std::ios::trunc)
          << "listen_addresses = '127.0.0.1'\n"
          << "port = " << port_ << "\n"
          << "unix_socket_directories = '" << dir_ << "'\n"
          << "ssl = on\n"
          << "ssl_cert_file = '" << dir_ << "/server.crt'\n"
          << "ssl_key_file = '" << dir_ << "/server.key'\n"
          << "fsync = off\n"
          << "max_connections = 20\n";
      for (const char* f : {"pg_hba.conf", "postgresql.auto.conf"})
        give_to_postgres(dir_ + "/data/" + f, 0600);
      const auto [code, out] = run({pg_bin("pg_ctl"), "start", "-D", dir_ + "/data", "-l",
                                    dir_ + "/server.log", "-w", "-t", "20"},
                                   log_dir() + "/start.log", true);
      if (code == 0) {
        started_ = true;
        return;
      }
      // Someone took the port between free_port() and the bind: another one.
      if (server_log().find("could not bind") == std::string::npos) {
        FAIL() << out << server_log();
      }
    }
    FAIL() << "no free port after 3 attempts: " << server_log();
  }

  // The superuser over the unix socket (trust), for arranging.
  std::string admin_conninfo() const {
    return "host=" + dir_ + " port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  }
  int port() const { return port_; }
  std::string server_log() const {
    std::ifstream in(dir_ + "/server.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  // Logs of the commands run as root next to the cluster directory, which
  // postgres owns.
  std::string log_dir() const { return fs::path(dir_).parent_path().string(); }

  std::string dir_;
  int port_ = 0;
  bool started_ = false;
};

class PgTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // mkdtemp made the directory 0700: the postgres user must enter it.
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
    fs::create_directories(dir_.file("certs"));
    certs_ = std::make_unique<Certificates>(dir_.file("certs"));
    ASSERT_NO_FATAL_FAILURE(certs_->make());
    cluster_ = std::make_unique<TlsCluster>(dir_.path(), *certs_);
    ASSERT_NO_FATAL_FAILURE(cluster_->start());
    pqxx::connection admin(cluster_->admin_conninfo());
    pqxx::nontransaction tx(admin);
    // Utility statements take no parameters: the password goes in through
    // libpq's own quoting.
    tx.exec(std::string("CREATE ROLE ") + kRole + " LOGIN PASSWORD " + tx.quote(kPassword));
    tx.exec(std::string("CREATE DATABASE ") + kDatabase + " OWNER " + kRole);
  }

  // database.url for `host` with the CA file `ca`, as an operator writes it.
  std::string url(const std::string& host, const std::string& ca,
                  const std::string& password = kPassword) const {
    return "postgresql://" + std::string(kRole) + ":" + password + "@" + host + ":" +
           std::to_string(cluster_->port()) + "/" + kDatabase +
           "?sslmode=verify-full&sslrootcert=" + certs_->file(ca);
  }
  std::pair<int, std::string> migrate(const std::string& database_url) const {
    return run_cli({"migrate"}, {{"CRM_WORKER_DATABASE_URL", database_url}});
  }
  long long migrations_applied() const {
    pqxx::connection c("host=" + dir_.path() + "/pg port=" + std::to_string(cluster_->port()) +
                       " user=postgres dbname=" + kDatabase);
    pqxx::nontransaction tx(c);
    if (tx.exec("SELECT to_regclass('schema_migrations') IS NULL")[0][0].as<bool>()) return 0;
    return tx.exec("SELECT count(*) FROM schema_migrations")[0][0].as<long long>();
  }

  TempDir dir_;
  std::unique_ptr<Certificates> certs_;
  std::unique_ptr<TlsCluster> cluster_;
};

TEST_F(PgTlsTest, VerifyFullConnectsOnlyToTheNamedHostWithTheRightCa) {
  // A certificate from a CA the operator did not name: refused before the
  // password is ever sent.
  {
    const auto [code, out] = migrate(url("localhost", "other-ca.crt"));
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("certificate verify failed"), std::string::npos) << out;
    EXPECT_EQ(out.find(kPassword), std::string::npos) << out;
  }
  // The right CA, but an address the certificate does not name.
  {
    const auto [code, out] = migrate(url("127.0.0.1", "ca.crt"));
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("does not match host name"), std::string::npos) << out;
    EXPECT_NE(out.find("127.0.0.1"), std::string::npos) << out;
    EXPECT_EQ(out.find(kPassword), std::string::npos) << out;
  }
  EXPECT_EQ(migrations_applied(), 0) << "nothing was written through a refused connection";

  // Verified, but the wrong password: the server's refusal is reported,
  // neither password is.
  {
    const std::string wrong = "cnry-wrong-7a41c3";
    const auto [code, out] = migrate(url("localhost", "ca.crt", wrong));
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("password authentication failed"), std::string::npos) << out;
    EXPECT_EQ(out.find(wrong), std::string::npos) << out;
    EXPECT_EQ(out.find(kPassword), std::string::npos) << out;
  }

  // The right CA and the name on the certificate: connected (TCP is
  // accepted only through hostssl) and the schema applied.
  const auto [code, out] = migrate(url("localhost", "ca.crt"));
  EXPECT_EQ(code, 0) << out << cluster_->server_log();
  EXPECT_NE(out.find("database schema up to date"), std::string::npos) << out;
  EXPECT_EQ(out.find(kPassword), std::string::npos) << out;
  EXPECT_GT(migrations_applied(), 0);
  // Nor did the server log it.
  EXPECT_EQ(cluster_->server_log().find(kPassword), std::string::npos);
}

}  // namespace
}  // namespace crm::test
