//! A cluster on one machine: the containers of `vchat export kubernetes` run as
//! processes, each in a Linux network namespace of its own on a private bridge,
//! with exactly the command, arguments, environment and configuration files
//! the exported manifests give, and the pods' DNS names resolving to those
//! namespaces' addresses (`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts
//! over /etc/hosts). Two gateways, two chat replicas, six rooms of two users,
//! each room's users on different gateways; then one replica is killed and
//! started again, then taken out of DNS and put back. Environment variables
//! from a Secret (`valueFrom.secretKeyRef`) get the exported Secret's value, and
//! an executor pod refuses a call without that secret. No traffic leaves the
//! machine.
//!
//! Needs root and `ip` (iproute2). Without them it says why on stderr, and
//! fails only under CI=true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vchat_e2e::*;

/// One container of the export: what its manifest says to run.
struct Container {
    /// The pod's name (`<statefulset>-<i>`, `gateway-<i>`).
    name: String,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The working directory and the files mounted there (from ConfigMaps).
    working_dir: String,
    files: BTreeMap<String, String>,
}

/// The exported objects by kind and name.
fn read_manifests(dir: &Path) -> BTreeMap<(String, String), Value> {
    let mut objects = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let (Some(kind), Some(name)) = (v["kind"].as_str(), v["metadata"]["name"].as_str()) else {
            continue;
        };
        objects.insert((kind.to_string(), name.to_string()), v.clone());
    }
    objects
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The value of env var `e`: its own, or its Secret's key, as the kubelet sets
/// it.
fn env_value(objects: &BTreeMap<(String, String), Value>, e: &Value) -> String {
    if let Some(v) = e["value"].as_str() {
        return v.to_string();
    }
    let r = &e["valueFrom"]["secretKeyRef"];
    let (Some(secret), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else {
        panic!("env {}: a value or a Secret's key", e["name"]);
    };
    let s = objects
        .get(&("Secret".to_string(), secret.to_string()))
        .unwrap_or_else(|| panic!("Secret {secret} is not exported"));
    s["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {secret} has no key {key}"))
        .to_string()
}

/// The containers of one workload's pod `name`: its command line, environment
/// and the files of the ConfigMaps mounted at its working directory.
fn container(objects: &BTreeMap<(String, String), Value>, pod: &Value, name: String) -> Container {
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let working_dir = c["workingDir"].as_str().unwrap().to_string();
    let mut files = BTreeMap::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        if m["mountPath"] != working_dir.as_str() {
            continue;
        }
        let vol = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        let cm = vol["configMap"]["name"]
            .as_str()
            .expect("a ConfigMap volume");
        let data = &objects[&("ConfigMap".to_string(), cm.to_string())]["data"];
        for (k, v) in data.as_object().unwrap() {
            files.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    Container {
        name,
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env: c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    env_value(objects, e),
                )
            })
            .collect(),
        working_dir,
        files,
    }
}

/// Runs `ip` with `args`; panics on failure unless `may_fail`.
fn ip(args: &[&str], may_fail: bool) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    if !out.status.success() && !may_fail {
        panic!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The test's namespaces, links, hosts files and processes, all removed when
/// dropped, whether the test passed or not.
struct Cluster {
    tag: String,
    bridge: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    created_etc_netns: bool,
    /// Processes by container name.
    procs: BTreeMap<String, Proc>,
    /// Where each container's mounted files are, by name.
    dirs: BTreeMap<String, PathBuf>,
    containers: BTreeMap<String, Container>,
    addrs: BTreeMap<String, String>,
}

impl Cluster {
    /// A bridge with an address in the root namespace (from where the users
    /// connect), a namespace per container with loopback up and an address,
    /// and a hosts file per namespace naming every pod.
    fn new(containers: Vec<Container>, names: &[(String, String)], scratch: &Path) -> Cluster {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let nonce = (std::process::id() ^ clock) & 0xff_ffff;
        let tag = format!("{nonce:06x}");
        let subnet = 1 + (nonce % 250) as u8;
        let created_etc_netns = !Path::new("/etc/netns").exists();
        let mut c = Cluster {
            bridge: format!("vcb{tag}"),
            tag,
            namespaces: Vec::new(),
            host_links: Vec::new(),
            etc_dirs: Vec::new(),
            created_etc_netns,
            procs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            containers: BTreeMap::new(),
            addrs: BTreeMap::new(),
        };
        ip(&["link", "add", &c.bridge, "type", "bridge"], false);
        c.host_links.push(c.bridge.clone());
        ip(
            &[
                "addr",
                "add",
                &format!("10.213.{subnet}.1/24"),
                "dev",
                &c.bridge,
            ],
            false,
        );
        ip(&["link", "set", &c.bridge, "up"], false);
        for (i, ct) in containers.iter().enumerate() {
            let addr = format!("10.213.{subnet}.{}", 10 + i);
            c.addrs.insert(ct.name.clone(), addr);
        }
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, alias) in names {
            hosts.push_str(&format!("{} {alias}\n", c.addrs[name]));
        }
        for (i, ct) in containers.into_iter().enumerate() {
            let ns = format!("vchat-{}-{}", c.tag, ct.name);
            ip(&["netns", "add", &ns], false);
            c.namespaces.push(ns.clone());
            let (host, inside) = (format!("vc{}{i}", c.tag), format!("vp{}{i}", c.tag));
            ip(
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", &inside,
                ],
                false,
            );
            c.host_links.push(host.clone());
            ip(&["link", "set", &inside, "netns", &ns], false);
            ip(&["link", "set", &host, "master", &c.bridge, "up"], false);
            let addr = format!("{}/24", c.addrs[&ct.name]);
            ip(
                &[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inside,
                ],
                false,
            );
            ip(
                &["netns", "exec", &ns, "ip", "link", "set", &inside, "up"],
                false,
            );
            ip(
                &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
                false,
            );
            let etc = Path::new("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc).unwrap();
            c.etc_dirs.push(etc.clone());
            std::fs::write(etc.join("hosts"), &hosts).unwrap();
            // The container's working directory, with its ConfigMaps' files.
            let dir = scratch.join(&ct.name);
            for (f, text) in &ct.files {
                write_file(&dir, f, text);
            }
            c.dirs.insert(ct.name.clone(), dir);
            c.containers.insert(ct.name.clone(), ct);
        }
        c
    }

    fn namespace(&self, name: &str) -> String {
        format!("vchat-{}-{name}", self.tag)
    }

    /// Starts container `name` as its manifest says, in its namespace, and
    /// waits until it listens.
    fn start(&mut self, name: &str) {
        let ct = &self.containers[name];
        assert_eq!(ct.command, ["vchat"], "{name}: the image's one program");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(name)])
            .arg(bin("vchat"))
            .args(&ct.args)
            .env_clear()
            .envs(ct.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dirs[name]);
        let _ = &ct.working_dir;
        let mut p = Proc::spawn(cmd);
        p.wait_line("listening", |l| {
            l.starts_with("vchat: listening on grpc://")
        });
        self.procs.insert(name.to_string(), p);
    }

    /// Kills container `name` at once (SIGKILL), as a node failure would.
    fn kill(&mut self, name: &str) {
        let p = self.procs.remove(name).unwrap();
        unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) };
        drop(p);
    }

    /// Writes every namespace's hosts file (in place: `ip netns exec` mounted
    /// these very files), naming every pod but `without`.
    fn set_hosts(&self, names: &[(String, String)], without: Option<&str>) {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, alias) in names {
            if Some(name.as_str()) != without {
                hosts.push_str(&format!("{} {alias}\n", self.addrs[name]));
            }
        }
        for d in &self.etc_dirs {
            std::fs::write(d.join("hosts"), &hosts).unwrap();
        }
    }

    /// Waits until each of `gateways` has logged `line` `times` times.
    fn wait_for_gateways(&self, line: &str, times: usize, gateways: &[String]) {
        let deadline = Instant::now() + PATIENCE;
        for g in gateways {
            while self.log(g).matches(line).count() < times {
                assert!(
                    Instant::now() < deadline,
                    "{g} never logged {line:?}:\n{}",
                    self.log(g)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log(&self, name: &str) -> String {
        self.procs.get(name).map(Proc::log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first: a namespace goes only once nothing runs in it.
        self.procs.clear();
        for ns in &self.namespaces {
            ip(&["netns", "del", ns], true);
        }
        for l in &self.host_links {
            ip(&["link", "del", l], true);
        }
        for d in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if self.created_etc_netns {
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

/// Whether this machine can run the cluster; why not, otherwise.
fn can_run() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("`ip` (iproute2) is not installed; scripts/install-deps.sh installs it".into()),
    }
}

const ROOMS: [&str; 6] = ["amber", "birch", "cedar", "delta", "ember", "fjord"];
const H: usize = 24;
const W: usize = 32;

/// Each room's two users' colours: distinct across rooms, so that a mosaic
/// with a frame of another room would show.
fn colours(room: usize) -> ([u8; 3], [u8; 3]) {
    let r = room as u8;
    ([200, 20 + 30 * r, 40], [40, 20 + 30 * r, 200])
}

fn in_room(mut doc: vchat_core::Document, room: &str) -> vchat_core::Document {
    doc.set_tag_str("room", room);
    doc
}

struct Pair {
    room: &'static str,
    first: User,
    second: User,
    colours: ([u8; 3], [u8; 3]),
}

impl Pair {
    /// One frame from each user; whether both got the room's full mosaic (the
    /// first user's frame above the second's), and how many errors came back.
    async fn round(&mut self) -> (bool, usize) {
        let (a, b) = self.colours;
        let mut full = true;
        let mut errors = 0;
        for (u, name, c) in [
            (&mut self.first, "first", a),
            (&mut self.second, "second", b),
        ] {
            let r = u.send(in_room(frame(name, c, H, W), self.room)).await;
            if r.is_error() {
                errors += 1;
                full = false;
                continue;
            }
            let doc = &r.docs().unwrap()[0];
            full &= bands(doc.tensor().unwrap(), H) == vec![a, b];
        }
        (full, errors)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_replicas_six_rooms_a_replica_restarted_then_out_of_dns() {
    if let Err(why) = can_run() {
        eprintln!("cluster test not run: {why}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the cluster test must run under CI: {why}"
        );
        return;
    }
    let dir = scratch("cluster");
    let flow = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - name: chat\n    uses: VideoChatExecutor\n    replicas: 2\n    \
         uses_with:\n      labels: false\n      idle_timeout_s: 30\n",
    );
    let out = dir.join("k8s");
    let export = Command::new(bin("vchat"))
        .args(["export", "kubernetes"])
        .arg(&flow)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );

    // The pods of the manifests, and the DNS names Kubernetes would give them.
    let objects = read_manifests(&out);
    let mut containers = Vec::new();
    let mut names = Vec::new();
    let mut executor_pods = Vec::new();
    for ((kind, name), v) in &objects {
        let replicas = v["spec"]["replicas"].as_u64().unwrap_or(1);
        match kind.as_str() {
            "StatefulSet" => {
                let svc = v["spec"]["serviceName"].as_str().unwrap();
                for i in 0..replicas {
                    let pod = format!("{name}-{i}");
                    names.push((pod.clone(), format!("{pod}.{svc}")));
                    executor_pods.push(pod.clone());
                    containers.push(container(&objects, &v["spec"]["template"], pod));
                }
            }
            "Deployment" => {
                for i in 0..replicas {
                    containers.push(container(
                        &objects,
                        &v["spec"]["template"],
                        format!("{name}-{i}"),
                    ));
                }
            }
            _ => {}
        }
    }
    assert_eq!(executor_pods, ["chat-0", "chat-1"]);
    let gateways: Vec<String> = containers
        .iter()
        .filter(|c| c.args.first().map(String::as_str) == Some("flow"))
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(gateways, ["gateway-0", "gateway-1"]);
    let port = objects[&("Service".to_string(), "gateway".to_string())]["spec"]["ports"][0]["port"]
        .as_u64()
        .unwrap();

    let mut cluster = Cluster::new(containers, &names, &dir);
    for pod in &executor_pods {
        cluster.start(pod);
    }
    for g in &gateways {
        cluster.start(g);
    }
    let gw_addr: Vec<String> = gateways
        .iter()
        .map(|g| format!("grpc://{}:{port}", cluster.addrs[g]))
        .collect();

    // Where each room lives, as every gateway computes it: over the replicas'
    // names as the gateways' Flow lists them.
    let gateway_flow =
        vchat_core::config::load_flow(&cluster.dirs["gateway-0"].join("flow.yml")).unwrap();
    let listed = gateway_flow.executors[0].deployment.external.clone();
    assert_eq!(listed.len(), executor_pods.len());
    let home: Vec<usize> = ROOMS
        .iter()
        .map(|r| vchat_gateway::flow::discovery::winner(r, listed.iter().map(String::as_str)))
        .collect();
    assert!(
        home.contains(&0) && home.contains(&1),
        "rooms on both replicas: {home:?}"
    );

    // Each room's first user on one gateway, the second on the other.
    let mut pairs = Vec::new();
    for (i, room) in ROOMS.iter().enumerate() {
        pairs.push(Pair {
            room,
            first: User::connect(&gw_addr[i % 2]),
            second: User::connect(&gw_addr[(i + 1) % 2]),
            colours: colours(i),
        });
    }
    for p in pairs.iter_mut() {
        let (a, _) = p.colours;
        let r = p.first.send(in_room(frame("first", a, H, W), p.room)).await;
        assert!(!r.is_error(), "{}: {:?}", p.room, r.error());
    }
    for p in pairs.iter_mut() {
        let (_, b) = p.colours;
        let r = p
            .second
            .send(in_room(frame("second", b, H, W), p.room))
            .await;
        assert!(!r.is_error(), "{}: {:?}", p.room, r.error());
    }
    for _ in 0..3 {
        for p in pairs.iter_mut() {
            let (full, errors) = p.round().await;
            assert!(
                full && errors == 0,
                "room {}: both users see the full mosaic",
                p.room
            );
        }
    }
    // The gateways call the executors with the exported secret; anyone else
    // who reaches an executor pod is refused.
    {
        use vchat_proto::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
        let pod = &executor_pods[0];
        let port = objects[&("StatefulSet".to_string(), "chat".to_string())]["spec"]["template"]
            ["spec"]["containers"][0]["ports"][0]["containerPort"]
            .as_u64()
            .unwrap();
        let mut client = JinaSingleDataRequestRpcClient::connect(format!(
            "http://{}:{port}",
            cluster.addrs[pod]
        ))
        .await
        .unwrap();
        let req = request(
            "intruder",
            vec![in_room(frame("mallory", [9, 9, 9], H, W), ROOMS[0]).into_proto()],
        );
        let Err(err) = client.process_single_data(req).await else {
            panic!("{pod} took a call without the executor secret");
        };
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{pod}: {err:?}");
        assert!(
            !cluster.log(pod).contains("mallory"),
            "{pod} did not take the call"
        );
    }
    // Both replicas hold rooms: the work is spread, each room in one place.
    for (i, pod) in executor_pods.iter().enumerate() {
        let joined = cluster.log(pod).matches("User joined").count();
        let rooms = home.iter().filter(|h| **h == i).count();
        assert_eq!(
            joined,
            2 * rooms,
            "{pod} holds its {rooms} rooms' users:\n{}",
            cluster.log(pod)
        );
    }

    // One replica fails: its rooms get errors, every other room goes on.
    let lost = 1;
    cluster.kill(&executor_pods[lost]);
    for _ in 0..3 {
        for (p, h) in pairs.iter_mut().zip(&home) {
            let (full, errors) = p.round().await;
            if *h == lost {
                assert_eq!(errors, 2, "room {} lost its replica", p.room);
            } else {
                assert!(full && errors == 0, "room {} is untouched", p.room);
            }
        }
    }
    // It comes back (a StatefulSet starts the pod again under its name): its
    // rooms start afresh from their users' next frames.
    cluster.start(&executor_pods[lost]);
    let deadline = Instant::now() + PATIENCE;
    let mut recovered = vec![false; ROOMS.len()];
    while recovered.iter().any(|r| !r) {
        assert!(Instant::now() < deadline, "rooms recovered: {recovered:?}");
        for (i, (p, h)) in pairs.iter_mut().zip(&home).enumerate() {
            let (full, errors) = p.round().await;
            if *h != lost {
                assert!(full && errors == 0, "room {} is untouched", p.room);
            }
            recovered[i] |= full;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in pairs.iter_mut() {
        let (full, errors) = p.round().await;
        assert!(full && errors == 0, "room {} serves again", p.room);
    }

    // The replica leaves DNS, as a pod that is no longer ready leaves its
    // headless Service: once the gateways look the names up again, its rooms
    // move to the other replica and go on there without an error, starting
    // afresh; the other rooms stay where they are.
    let joined_before = cluster
        .log(&executor_pods[0])
        .matches("User joined")
        .count();
    let moved = home.iter().filter(|h| **h == lost).count();
    cluster.set_hosts(&names, Some(&executor_pods[lost]));
    cluster.wait_for_gateways("Executor replicas changed", 1, &gateways);
    for round in 0..3 {
        for (p, h) in pairs.iter_mut().zip(&home) {
            let (full, errors) = p.round().await;
            assert_eq!(
                errors, 0,
                "room {}: no error when its replica leaves",
                p.room
            );
            // A moved room's first user is alone for one frame, until the
            // second user's next frame joins them on the new replica.
            assert!(
                full || (*h == lost && round == 0),
                "room {}: full mosaic",
                p.room
            );
        }
    }
    let joined_after = cluster
        .log(&executor_pods[0])
        .matches("User joined")
        .count();
    assert_eq!(
        joined_after - joined_before,
        2 * moved,
        "only the moved rooms' users joined {}",
        executor_pods[0]
    );
    // And back: the rooms return to the replica they hash to.
    cluster.set_hosts(&names, None);
    cluster.wait_for_gateways("Executor replicas changed", 2, &gateways);
    for round in 0..3 {
        for (p, h) in pairs.iter_mut().zip(&home) {
            let (full, errors) = p.round().await;
            assert_eq!(
                errors, 0,
                "room {}: no error when its replica returns",
                p.room
            );
            assert!(
                full || (*h == lost && round == 0),
                "room {}: full mosaic",
                p.room
            );
        }
    }
    for p in pairs {
        p.first.leave().await;
        p.second.leave().await;
    }
    drop(cluster);
    std::fs::remove_dir_all(&dir).ok();
}
