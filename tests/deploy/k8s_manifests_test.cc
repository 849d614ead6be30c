// deploy/k8s (plain YAML, kustomize overlays `sqlite` and `etcd` over `base`) and
// deploy/k8s/Dockerfile. No Kubernetes cluster is reachable from here, and no Docker
// daemon: this checks what can be checked without one. Every file parses; each
// kustomization lists exactly the files beside it (and renders with `kubectl kustomize`
// when kubectl is installed, offline); the controller and worker configs embedded in the
// ConfigMaps pass the real binary's `--check`, with the token and TLS files laid out where
// the pods mount the Secret; container, Service, probe and annotation ports agree with the
// configs' addresses; one image everywhere; the worker DaemonSet has what same-node
// consumers and GPUs need; and the Dockerfile's runtime packages provide every library
// the built binary links.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/deploy/process.h"
#include "tests/util/test_util.h"

namespace loadstar::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kK8s = fs::path(LOADSTAR_SOURCE_DIR) / "deploy" / "k8s";
constexpr char kImage[] = "registry.example.com/loadstar:0.1.0";

std::string ReadText(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<fs::path> YamlFiles(const fs::path& dir, bool recursive) {
  std::vector<fs::path> files;
  auto add = [&](const fs::directory_entry& e) {
    if (e.is_regular_file() && (e.path().extension() == ".yaml" || e.path().extension() == ".yml")) {
      files.push_back(e.path());
    }
  };
  if (recursive) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) add(e);
  } else {
    for (const auto& e : fs::directory_iterator(dir)) add(e);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The objects one overlay deploys: base's files and the overlay's, kustomization files
// excluded (what `kubectl apply -k` would send, without kustomize's label additions).
std::vector<YAML::Node> Objects(const std::string& overlay) {
  std::vector<YAML::Node> objects;
  for (const std::string& dir : {std::string("base"), overlay}) {
    for (const fs::path& f : YamlFiles(kK8s / dir, false)) {
      if (f.filename() == "kustomization.yaml") continue;
      for (const YAML::Node& doc : YAML::LoadAllFromFile(f.string())) {
        if (doc.IsMap()) objects.push_back(doc);
      }
    }
  }
  return objects;
}

YAML::Node Find(const std::vector<YAML::Node>& objects, const std::string& kind,
                const std::string& name) {
  for (const YAML::Node& o : objects) {
    if (o["kind"].as<std::string>() == kind && o["metadata"]["name"].as<std::string>() == name) {
      return o;
    }
  }
  ADD_FAILURE() << "no " << kind << " " << name;
  return YAML::Node();
}

int PortOf(const std::string& address) {
  return std::stoi(address.substr(address.rfind(':') + 1));
}

// The container's port named `name`.
int ContainerPort(const YAML::Node& container, const std::string& name) {
  for (const YAML::Node& p : container["ports"]) {
    if (p["name"].as<std::string>() == name) return p["containerPort"].as<int>();
  }
  ADD_FAILURE() << container["name"].as<std::string>() << " has no port " << name;
  return -1;
}

int ServicePort(const YAML::Node& service, const std::string& name) {
  for (const YAML::Node& p : service["spec"]["ports"]) {
    if (p["name"].as<std::string>() != name) continue;
    // targetPort by name, so the Service follows the container's port.
    EXPECT_EQ(p["targetPort"].as<std::string>(), name);
    return p["port"].as<int>();
  }
  ADD_FAILURE() << "Service has no port " << name;
  return -1;
}

// The port of `--addr HOST:PORT` among the container's args, if it has one.
std::optional<int> AddrFlagPort(const YAML::Node& container) {
  const YAML::Node& args = container["args"];
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i].as<std::string>() == "--addr") return PortOf(args[i + 1].as<std::string>());
  }
  return std::nullopt;
}

// A pod template's volume `name`.
YAML::Node Volume(const YAML::Node& pod_spec, const std::string& name) {
  for (const YAML::Node& v : pod_spec["volumes"]) {
    if (v["name"].as<std::string>() == name) return v;
  }
  ADD_FAILURE() << "no volume " << name;
  return YAML::Node();
}

// The volume mounted at the directory holding `path` (a file the config names).
YAML::Node VolumeHolding(const YAML::Node& pod_spec, const YAML::Node& container,
                         const std::string& path) {
  for (const YAML::Node& m : container["volumeMounts"]) {
    std::string at = m["mountPath"].as<std::string>();
    if (path == at || path.rfind(at + "/", 0) == 0) {
      return Volume(pod_spec, m["name"].as<std::string>());
    }
  }
  ADD_FAILURE() << "nothing is mounted where " << path << " is";
  return YAML::Node();
}

// What a daemon's config says, parsed as the test needs it (the binary does the real
// validation through --check).
struct DaemonConfig {
  YAML::Node yaml;
  std::string text;
};

DaemonConfig ConfigIn(const std::vector<YAML::Node>& objects, const std::string& configmap,
                      const std::string& key) {
  DaemonConfig c;
  c.text = Find(objects, "ConfigMap", configmap)["data"][key].as<std::string>();
  c.yaml = YAML::Load(c.text);
  return c;
}

// Runs `loadstar <daemon> --config CONFIG --check` on `config` as the pod would see it:
// every /etc/loadstar/... file it names is created under a temp root (the token the
// Secret would hold), and the paths are rewritten to point there.
CliResult CheckAsMounted(const std::string& daemon, const DaemonConfig& config,
                         const TempDir& dir) {
  std::string text = config.text;
  const std::string root = dir.Join("root");
  if (config.yaml["token_file"]) {
    std::string token = root + config.yaml["token_file"].as<std::string>();
    fs::create_directories(fs::path(token).parent_path());
    std::ofstream(token) << "k8s-test-token\n";
  }
  text = std::regex_replace(text, std::regex("/etc/loadstar/"), root + "/etc/loadstar/");
  std::string path = dir.Join(daemon + ".yaml");
  std::ofstream(path) << text;
  return RunCli({daemon, "--config", path, "--check"});
}

void ExpectScrapeAnnotations(const YAML::Node& pod_template, int metrics_port) {
  const YAML::Node a = pod_template["metadata"]["annotations"];
  ASSERT_TRUE(a.IsMap()) << "no annotations on the pod template";
  EXPECT_EQ(a["prometheus.io/scrape"].as<std::string>(""), "true");
  EXPECT_EQ(a["prometheus.io/port"].as<std::string>(""), std::to_string(metrics_port));
  EXPECT_EQ(a["prometheus.io/path"].as<std::string>(""), "/metrics");
}

TEST(K8sManifestsTest, EveryFileParsesAsKubernetesYaml) {
  std::vector<fs::path> files = YamlFiles(kK8s, true);
  ASSERT_GE(files.size(), 10u);
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    std::vector<YAML::Node> docs;
    ASSERT_NO_THROW(docs = YAML::LoadAllFromFile(f.string()));
    ASSERT_FALSE(docs.empty());
    for (const YAML::Node& d : docs) {
      ASSERT_TRUE(d.IsMap());
      EXPECT_TRUE(d["apiVersion"].IsScalar());
      EXPECT_TRUE(d["kind"].IsScalar());
      if (d["kind"].as<std::string>() != "Kustomization") {
        EXPECT_TRUE(d["metadata"]["name"].IsScalar());
        // Everything of loadstar lives in its namespace (but the namespace itself).
        if (d["kind"].as<std::string>() != "Namespace") {
          EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(""), "loadstar");
        }
      }
    }
  }
}

TEST(K8sManifestsTest, EachKustomizationListsTheFilesBesideIt) {
  for (const std::string dir : {"base", "sqlite", "etcd"}) {
    SCOPED_TRACE(dir);
    YAML::Node k = YAML::LoadFile((kK8s / dir / "kustomization.yaml").string());
    std::set<std::string> listed;
    for (const YAML::Node& r : k["resources"]) {
      std::string res = r.as<std::string>();
      EXPECT_TRUE(fs::exists(kK8s / dir / res)) << res;
      if (res.find('/') == std::string::npos) listed.insert(res);
    }
    if (dir != "base") {
      EXPECT_EQ(k["resources"][0].as<std::string>(), "../base");
    }
    for (const fs::path& f : YamlFiles(kK8s / dir, false)) {
      if (f.filename() == "kustomization.yaml") continue;
      EXPECT_TRUE(listed.count(f.filename().string())) << f << " is not in the kustomization";
    }
  }
}

TEST(K8sManifestsTest, OverlaysRenderWithKubectlKustomize) {
  CommandResult kubectl = RunShell("kubectl version --client");
  if (kubectl.exit_code != 0) GTEST_SKIP() << "kubectl is not installed";
  for (const std::string overlay : {"sqlite", "etcd"}) {
    CommandResult r = RunShell("kubectl kustomize " + (kK8s / overlay).string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::vector<YAML::Node> rendered = YAML::LoadAll(r.stdout_only);
    // Kustomize sends what Objects() reads, nothing dropped, nothing doubled.
    EXPECT_EQ(rendered.size(), Objects(overlay).size()) << overlay;
    for (const YAML::Node& o : rendered) {
      const YAML::Node labels = o["metadata"]["labels"];
      EXPECT_TRUE(labels && labels["app.kubernetes.io/part-of"].as<std::string>("") == "loadstar")
          << o["kind"] << " " << o["metadata"]["name"] << " lacks the part-of label";
    }
  }
}

// The controller of either overlay: ports of the config, container, Service, probes and
// annotations agree, and the config passes --check as the pod mounts it.
void CheckController(const std::string& overlay, int replicas) {
  SCOPED_TRACE(overlay);
  std::vector<YAML::Node> objects = Objects(overlay);
  DaemonConfig config = ConfigIn(objects, "loadstar-controller-config", "controller.yaml");
  YAML::Node deployment = Find(objects, "Deployment", "loadstar-controller");
  YAML::Node service = Find(objects, "Service", "loadstar-controller");
  ASSERT_TRUE(deployment && service);
  EXPECT_EQ(deployment["spec"]["replicas"].as<int>(), replicas);
  EXPECT_EQ(service["spec"]["type"].as<std::string>(), "ClusterIP");
  const YAML::Node& pod = deployment["spec"]["template"];
  const YAML::Node& container = pod["spec"]["containers"][0];
  EXPECT_EQ(container["args"][0].as<std::string>(), "controller");

  int grpc = PortOf(config.yaml["address"].as<std::string>());
  int metrics = PortOf(config.yaml["metrics_address"].as<std::string>());
  EXPECT_EQ(ContainerPort(container, "grpc"), grpc);
  EXPECT_EQ(ContainerPort(container, "metrics"), metrics);
  EXPECT_EQ(ServicePort(service, "grpc"), grpc);
  EXPECT_EQ(ServicePort(service, "metrics"), metrics);
  if (auto flag = AddrFlagPort(container)) {
    EXPECT_EQ(*flag, grpc);
  }
  // Ready = the health service says SERVING: once recovered (SQLite), only while leading
  // (etcd: followers are NOT_SERVING, so the Service reaches the leader alone).
  ASSERT_TRUE(container["readinessProbe"]["grpc"]) << "readiness is the gRPC health service";
  EXPECT_EQ(container["readinessProbe"]["grpc"]["port"].as<int>(), grpc);
  for (const char* probe : {"startupProbe", "livenessProbe"}) {
    SCOPED_TRACE(probe);
    const YAML::Node p = container[probe];
    if (!p) continue;
    ASSERT_TRUE(p["grpc"] || p["tcpSocket"]);
    EXPECT_EQ((p["grpc"] ? p["grpc"] : p["tcpSocket"])["port"].as<int>(), grpc);
    // A follower is alive but NOT_SERVING: a gRPC liveness probe would restart it.
    if (replicas > 1) {
      EXPECT_FALSE(p["grpc"]) << "followers would fail a gRPC " << probe;
    }
  }
  EXPECT_TRUE(container["livenessProbe"]);
  ExpectScrapeAnnotations(pod, metrics);
  EXPECT_EQ(YAML::Node(service["spec"]["selector"])["app.kubernetes.io/name"].as<std::string>(),
            pod["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>());

  // The token file is where the Secret is mounted.
  YAML::Node secret = VolumeHolding(pod["spec"], container,
                                    config.yaml["token_file"].as<std::string>());
  EXPECT_EQ(secret["secret"]["secretName"].as<std::string>(""), "loadstar-token");
  EXPECT_EQ(fs::path(config.yaml["token_file"].as<std::string>()).filename(), "token");
  // The config file is where the ConfigMap is mounted.
  YAML::Node cm = VolumeHolding(pod["spec"], container, container["args"][2].as<std::string>());
  EXPECT_EQ(cm["configMap"]["name"].as<std::string>(""), "loadstar-controller-config");
}

TEST(K8sManifestsTest, SqliteControllerAgreesWithItsConfig) {
  CheckController("sqlite", 1);
  // The one controller's health is the health service itself, start-up (recovery) included.
  const YAML::Node c =
      Find(Objects("sqlite"), "Deployment", "loadstar-controller")["spec"]["template"]["spec"]["containers"][0];
  EXPECT_TRUE(c["startupProbe"]["grpc"] && c["livenessProbe"]["grpc"]);
  std::vector<YAML::Node> objects = Objects("sqlite");
  DaemonConfig config = ConfigIn(objects, "loadstar-controller-config", "controller.yaml");
  YAML::Node deployment = Find(objects, "Deployment", "loadstar-controller");
  // One writer of the database: the old pod goes before the new one opens it.
  EXPECT_EQ(deployment["spec"]["strategy"]["type"].as<std::string>(), "Recreate");
  std::string state = config.yaml["state"].as<std::string>();
  ASSERT_EQ(state.rfind("sqlite:", 0), 0u);
  const YAML::Node& pod = deployment["spec"]["template"];
  YAML::Node volume = VolumeHolding(pod["spec"], pod["spec"]["containers"][0], state.substr(7));
  std::string claim = volume["persistentVolumeClaim"]["claimName"].as<std::string>("");
  EXPECT_TRUE(Find(objects, "PersistentVolumeClaim", claim)) << "the database is on a PVC";

  TempDir dir;
  CliResult r = CheckAsMounted("controller", config, dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "config OK\n");
}

TEST(K8sManifestsTest, EtcdControllersAgreeWithTheirConfig) {
  CheckController("etcd", 3);
  std::vector<YAML::Node> objects = Objects("etcd");
  DaemonConfig config = ConfigIn(objects, "loadstar-controller-config", "controller.yaml");
  // Every endpoint in `state:` is a member of the StatefulSet, by its stable name behind
  // the headless Service, on its client port.
  YAML::Node sts = Find(objects, "StatefulSet", "loadstar-etcd");
  YAML::Node headless = Find(objects, "Service", "loadstar-etcd");
  ASSERT_TRUE(sts && headless);
  EXPECT_EQ(headless["spec"]["clusterIP"].as<std::string>(), "None");
  EXPECT_EQ(sts["spec"]["serviceName"].as<std::string>(), "loadstar-etcd");
  int members = sts["spec"]["replicas"].as<int>();
  EXPECT_EQ(members, 3);
  EXPECT_EQ(sts["spec"]["volumeClaimTemplates"].size(), 1u) << "each member has its own data PVC";
  const YAML::Node& etcd = sts["spec"]["template"]["spec"]["containers"][0];
  int client = ContainerPort(etcd, "client");
  std::set<std::string> expected;
  for (int i = 0; i < members; ++i) {
    expected.insert(fmt::format("loadstar-etcd-{}.loadstar-etcd:{}", i, client));
  }
  std::smatch m;
  std::string state = config.yaml["state"].as<std::string>();
  ASSERT_TRUE(std::regex_match(state, m, std::regex("etcd://([^/]+)/(.+)"))) << state;
  std::set<std::string> endpoints;
  std::stringstream list(m[1].str());
  for (std::string e; std::getline(list, e, ',');) endpoints.insert(e);
  EXPECT_EQ(endpoints, expected);
  // The members' --initial-cluster names the same pods.
  std::string command;
  for (const YAML::Node& c : etcd["command"]) command += c.as<std::string>() + " ";
  for (int i = 0; i < members; ++i) {
    EXPECT_THAT(command, HasSubstr(fmt::format("loadstar-etcd-{0}=http://loadstar-etcd-{0}.loadstar-etcd:", i)));
  }

  // Only the leader is Ready: a rollout that waited for Ready new pods would never end.
  YAML::Node deployment = Find(objects, "Deployment", "loadstar-controller");
  EXPECT_EQ(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as<std::string>(""),
            "100%");

  // --check accepts the config where the parser knows etcd:// (the etcd state store); a
  // tree without it refuses `state:` and nothing else.
  TempDir dir;
  CliResult r = CheckAsMounted("controller", config, dir);
  if (r.exit_code != 0 && r.err.find("state:") != std::string::npos &&
      r.err.find("etcd://") != std::string::npos) {
    GTEST_SKIP() << "the controller config parser does not accept state: etcd:// yet (the "
                    "etcd state store of issue 10); this check turns on once it does: "
                 << r.err;
  }
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "config OK\n");
}

TEST(K8sManifestsTest, WorkerDaemonSetAgreesWithItsConfig) {
  std::vector<YAML::Node> objects = Objects("sqlite");
  DaemonConfig config = ConfigIn(objects, "loadstar-worker-config", "worker.yaml");
  YAML::Node ds = Find(objects, "DaemonSet", "loadstar-worker");
  YAML::Node service = Find(objects, "Service", "loadstar-worker");
  YAML::Node controller_service = Find(objects, "Service", "loadstar-controller");
  ASSERT_TRUE(ds && service && controller_service);
  const YAML::Node& pod = ds["spec"]["template"];
  const YAML::Node& spec = pod["spec"];
  const YAML::Node& container = spec["containers"][0];
  EXPECT_EQ(container["args"][0].as<std::string>(), "worker");

  int grpc = PortOf(config.yaml["address"].as<std::string>());
  int metrics = PortOf(config.yaml["metrics_address"].as<std::string>());
  EXPECT_EQ(ContainerPort(container, "grpc"), grpc);
  EXPECT_EQ(ContainerPort(container, "metrics"), metrics);
  EXPECT_EQ(ServicePort(service, "grpc"), grpc);
  EXPECT_EQ(ServicePort(service, "metrics"), metrics);
  ExpectScrapeAnnotations(pod, metrics);
  // Readiness on the gRPC health service (SERVING once registered); liveness on the same
  // port, by TCP: see the DaemonSet's comment for why not the health service.
  ASSERT_TRUE(container["readinessProbe"]["grpc"]);
  EXPECT_EQ(container["readinessProbe"]["grpc"]["port"].as<int>(), grpc);
  const YAML::Node& live = container["livenessProbe"];
  ASSERT_TRUE(live["grpc"] || live["tcpSocket"]);
  EXPECT_EQ((live["grpc"] ? live["grpc"] : live["tcpSocket"])["port"].as<int>(), grpc);

  // The worker advertises its pod IP (downward API) on the config's port, under the node's
  // name as its id.
  std::map<std::string, std::string> env;
  for (const YAML::Node& e : container["env"]) {
    env[e["name"].as<std::string>()] = e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>("");
  }
  EXPECT_EQ(env["POD_IP"], "status.podIP");
  EXPECT_EQ(env["NODE_NAME"], "spec.nodeName");
  std::vector<std::string> args = container["args"].as<std::vector<std::string>>();
  EXPECT_THAT(args, ::testing::Contains(fmt::format("$(POD_IP):{}", grpc)));
  EXPECT_THAT(args, ::testing::Contains("$(NODE_NAME)"));

  // It dials the controller's Service: NAME.NAMESPACE.svc:PORT.
  std::string controller = config.yaml["controller"].as<std::string>();
  EXPECT_EQ(controller, fmt::format("{}.{}.svc:{}",
                                    controller_service["metadata"]["name"].as<std::string>(),
                                    controller_service["metadata"]["namespace"].as<std::string>(),
                                    ServicePort(controller_service, "grpc")));

  // GPU nodes, their taint, every GPU, and what same-node consumers need.
  EXPECT_TRUE(spec["nodeSelector"].IsMap() && spec["nodeSelector"].size() > 0);
  bool tolerates = false;
  for (const YAML::Node& t : spec["tolerations"]) {
    tolerates |= t["key"].as<std::string>("") == "nvidia.com/gpu";
  }
  EXPECT_TRUE(tolerates) << "no toleration for the nvidia.com/gpu taint";
  EXPECT_GT(container["resources"]["limits"]["nvidia.com/gpu"].as<int>(0), 0);
  EXPECT_TRUE(spec["hostIPC"].as<bool>(false));
  // One worker per node at all times on the host's /dev/shm (see the DaemonSet's comment).
  EXPECT_EQ(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"].as<int>(-1), 0);
  YAML::Node shm = VolumeHolding(spec, container, "/dev/shm");
  EXPECT_TRUE(shm["hostPath"]["path"].as<std::string>("") == "/dev/shm" ||
              shm["emptyDir"]["medium"].as<std::string>("") == "Memory");
  YAML::Node store = VolumeHolding(spec, container, config.yaml["store"].as<std::string>());
  EXPECT_TRUE(store["hostPath"]) << "the store is on the node's disk";
  YAML::Node secret = VolumeHolding(spec, container, config.yaml["token_file"].as<std::string>());
  EXPECT_EQ(secret["secret"]["secretName"].as<std::string>(""), "loadstar-token");

  TempDir dir;
  CliResult r = CheckAsMounted("worker", config, dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "config OK\n");
}

TEST(K8sManifestsTest, OneImageEverywhere) {
  std::set<std::string> images;
  for (const std::string overlay : {"sqlite", "etcd"}) {
    for (const YAML::Node& o : Objects(overlay)) {
      const std::string kind = o["kind"].as<std::string>();
      if (kind != "Deployment" && kind != "DaemonSet" && kind != "StatefulSet") continue;
      if (o["metadata"]["name"].as<std::string>() == "loadstar-etcd") continue;  // etcd's own
      const YAML::Node pod = o["spec"]["template"]["spec"];
      for (const char* list : {"initContainers", "containers"}) {
        for (const YAML::Node& c : pod[list]) images.insert(c["image"].as<std::string>());
      }
    }
  }
  EXPECT_EQ(images, std::set<std::string>{kImage});
  // The Dockerfile's build line tags that image, and the operator page says the same.
  EXPECT_THAT(ReadText(kK8s / "Dockerfile"), HasSubstr(std::string("-t ") + kImage));
  EXPECT_THAT(ReadText(fs::path(LOADSTAR_SOURCE_DIR) / "docs" / "operations.md"),
              HasSubstr(kImage));
}

// The runtime stage installs the Debian packages of every shared library the binary links
// directly (beyond the base image's libc, libstdc++ and libgcc). Read from the binary ctest
// built, so a new dependency that the Dockerfile misses fails here, not in a cluster.
TEST(K8sManifestsTest, DockerfileRuntimePackagesProvideTheBinarysLibraries) {
  if (RunShell("command -v dpkg-query && command -v objdump").exit_code != 0) {
    GTEST_SKIP() << "dpkg-query or objdump is not installed";
  }
  std::string dockerfile = ReadText(kK8s / "Dockerfile");
  std::string runtime = dockerfile.substr(dockerfile.find("AS runtime"));
  CommandResult needed = RunShell("objdump -p " + LoadstarBinary() + " | awk '/NEEDED/ {print $2}'");
  ASSERT_EQ(needed.exit_code, 0) << needed.output;
  CommandResult arch = RunShell("dpkg-architecture -qDEB_HOST_MULTIARCH || gcc -print-multiarch");
  std::string multiarch = arch.stdout_only.substr(0, arch.stdout_only.find('\n'));
  ASSERT_FALSE(multiarch.empty()) << arch.output;
  // One dpkg -S for all sonames (it reads its file lists once), each by a glob under the
  // multiarch directory: dpkg's database has /usr/lib or /lib paths depending on the
  // package. Lines read "package:arch: /path/soname".
  std::stringstream libs(needed.stdout_only);
  std::set<std::string> wanted;
  std::string patterns;
  for (std::string lib; std::getline(libs, lib);) {
    if (lib.empty() || lib.find("libcuda") == 0 || lib.find("libcudart") == 0 ||
        lib.find("libcublas") == 0 || lib.find("libnccl") == 0) {
      continue;  // the CUDA variant installs these from NVIDIA's repository
    }
    wanted.insert(lib);
    patterns += " '*/" + multiarch + "/" + lib + "'";
  }
  CommandResult owners = RunShell("dpkg -S" + patterns + " 2>/dev/null");
  std::map<std::string, std::string> package_of;  // soname -> package
  std::stringstream lines(owners.stdout_only);
  for (std::string line; std::getline(lines, line);) {
    size_t sep = line.find(": ");
    if (sep == std::string::npos) continue;
    std::string package = line.substr(0, std::min(line.find(':'), line.find(',')));
    package_of[fs::path(line.substr(sep + 2)).filename().string()] = package;
  }
  const std::set<std::string> base = {"libc6", "libstdc++6", "libgcc-s1"};
  int checked = 0;
  for (const std::string& lib : wanted) {
    auto it = package_of.find(lib);
    ASSERT_TRUE(it != package_of.end()) << "no package owns " << lib;
    ++checked;
    if (base.count(it->second)) continue;
    EXPECT_THAT(runtime, HasSubstr(" " + it->second + " ")) << lib << " comes from " << it->second;
  }
  EXPECT_GT(checked, 5);
}

}  // namespace
}  // namespace loadstar::testing
