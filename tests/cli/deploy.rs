//! The files in `deploy/` are part of the product: the systemd unit verifies and carries its
//! hardening, the example configs load with the real config loader, the Kubernetes manifests
//! parse and describe one Recreate replica with the right probes, the HA overlay describes two
//! replicas on PostgreSQL with a shared exports volume and a disruption budget, the job files
//! shipped in the jobs ConfigMap validate, and the Containerfile keeps its shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use restorectl::config::Config;
use restorectl::jobs::{ValidationContext, parse_str};
use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=value` lines of a unit file's [Service] section (repeated keys keep every value).
fn service_keys(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    keys
}

#[test]
fn unit_has_the_hardening_and_lifecycle_keys() {
    let keys = service_keys(&read("deploy/restorectl.service"));
    let one = |k: &str| -> &str {
        let v = keys.get(k).unwrap_or_else(|| panic!("{k} missing"));
        &v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartPreventExitStatus"), "78");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("StateDirectory"), "restorectl");
    assert_eq!(one("ConfigurationDirectory"), "restorectl");
    assert_eq!(one("User"), "restorectl");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("SystemCallFilter"), "@system-service");
    for k in [
        "WatchdogSec",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "SystemCallArchitectures",
    ] {
        assert!(keys.contains_key(k), "{k} missing");
    }
    // Writable: state and exports only.
    for path in &keys["ReadWritePaths"] {
        let path = path.trim_start_matches('-');
        assert!(
            path.starts_with("/var/lib/restorectl"),
            "{path} is writable"
        );
    }
    let credentials: Vec<&str> = keys["LoadCredential"]
        .iter()
        .map(|c| c.trim_start_matches('-'))
        .collect();
    for name in [
        "vb365-password:",
        "m365-app-cert:",
        "m365-app-cert-password:",
    ] {
        assert!(
            credentials.iter().any(|c| c.starts_with(name)),
            "{name} not loaded"
        );
    }
    // systemd must wait longer than the daemon's shutdown timeout (30 s by default).
    let stop = humantime::parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(
        stop > std::time::Duration::from_secs(30),
        "TimeoutStopSec {stop:?}"
    );
    assert!(one("ExecStart").starts_with("/usr/bin/restorectl daemon"));
}

/// `systemd-analyze verify` on the unit as installed, with ExecStart pointing at the binary
/// under test (verify checks that the command exists) and MANPATH holding the man pages
/// `restorectl man` generates (verify checks `Documentation=man:` too). Skipped, with a note,
/// where systemd-analyze is not installed; under `CI=true` that fails (.ci/run installs it).
#[test]
fn systemd_analyze_verify_passes() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        crate::common::tool_missing("systemd-analyze", "the unit verification");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("restorectl");
    let unit =
        read("deploy/restorectl.service").replace("/usr/bin/restorectl", bin.to_str().unwrap());
    let unit_path = dir.path().join("restorectl.service");
    std::fs::write(&unit_path, unit).unwrap();
    let man1 = dir.path().join("man/man1");
    let status = Command::new(&bin)
        .args(["man", "--out-dir"])
        .arg(&man1)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sysusers_and_tmpfiles_name_the_service_user() {
    let sysusers = read("deploy/restorectl.sysusers");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "restorectl"]))
    );
    let tmpfiles = read("deploy/restorectl.tmpfiles");
    for dir in ["/var/lib/restorectl/exports", "/etc/restorectl/jobs"] {
        assert!(
            tmpfiles
                .lines()
                .any(|l| l.starts_with('d') && l.split_whitespace().nth(1) == Some(dir)),
            "{dir} not created"
        );
    }
}

#[test]
fn example_config_loads_with_the_real_loader() {
    let path = repo().join("deploy/restorectl.yaml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.jobs_dir, Path::new("/etc/restorectl/jobs"));
    assert_eq!(
        config.database,
        "sqlite:///var/lib/restorectl/restorectl.db"
    );
    assert!(config.servers.contains_key("primary"));
    assert_eq!(config.shutdown_timeout, std::time::Duration::from_secs(30));
}

fn manifests() -> Vec<(String, Value)> {
    manifests_in("deploy/kubernetes/base")
}

/// Every YAML document of the files directly in `rel`, with its file name.
fn manifests_in(rel: &str) -> Vec<(String, Value)> {
    let dir = repo().join(rel);
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                out.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    out
}

fn by_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, v)| v["kind"].as_str() == Some(kind))
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn the_kubernetes_root_is_the_base_and_the_ha_overlay_builds_on_it() {
    let root = manifests_in("deploy/kubernetes");
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].1["resources"][0], "base");

    let docs = manifests_in("deploy/kubernetes/ha");
    let kustomization = by_kind(&docs, "Kustomization")[0];
    assert_eq!(kustomization["namespace"], "restorectl");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources[0], "../base");
    // Every file of the overlay is a listed resource or patch.
    let mut listed: Vec<&str> = resources[1..].to_vec();
    for patch in kustomization["patches"].as_sequence().unwrap() {
        if let Some(path) = patch["path"].as_str() {
            listed.push(path);
        }
    }
    listed.sort();
    let mut files: Vec<&str> = docs
        .iter()
        .filter(|(_, v)| v["kind"] != "Kustomization")
        .map(|(f, _)| f.as_str())
        .collect();
    files.sort();
    assert_eq!(listed, files);
    // The single-replica ReadWriteOnce state volume is removed.
    let inline = kustomization["patches"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|p| p["patch"].as_str())
        .unwrap();
    assert!(
        inline.contains("$patch: delete") && inline.contains("restorectl-state"),
        "{inline}"
    );

    let deployment = by_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let exports_mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "exports")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    let exports = volumes.iter().find(|v| v["name"] == "exports").unwrap();
    let claim = exports["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    let state = volumes.iter().find(|v| v["name"] == "state").unwrap();
    assert!(state.get("emptyDir").is_some(), "{state:?}");
    let pvc = by_kind(&docs, "PersistentVolumeClaim")[0];
    assert_eq!(pvc["metadata"]["name"], claim);
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteMany");
    let pdb = by_kind(&docs, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment_labels(&manifests())
    );

    // The config: PostgreSQL with the password from the credentials Secret, exportRoot on the
    // shared volume, and it loads with the real loader.
    let cm = by_kind(&docs, "ConfigMap")[0];
    let text = cm["data"]["restorectl.yaml"].as_str().unwrap();
    let config =
        Config::from_yaml(text, Path::new("/etc/restorectl/config/restorectl.yaml")).unwrap();
    assert!(
        config.database.starts_with("postgres://"),
        "{}",
        config.database
    );
    assert_eq!(config.export_root, Path::new(exports_mount));
    assert!(
        text.contains("databasePassword: { secret: db-password }"),
        "{text}"
    );
    let secret = by_kind(&docs, "Secret")[0];
    assert_eq!(secret["metadata"]["name"], "restorectl-credentials");
    assert!(secret["stringData"].get("db-password").is_some());
}

/// The pod labels the base Deployment selects on.
fn deployment_labels(base: &[(String, Value)]) -> Value {
    by_kind(base, "Deployment")[0]["spec"]["selector"]["matchLabels"].clone()
}

#[test]
fn kubernetes_manifests_parse_and_run_one_recreated_replica_with_probes() {
    let docs = manifests();
    let mut kinds: Vec<&str> = docs
        .iter()
        .map(|(_, v)| v["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Kustomization",
            "Namespace",
            "PersistentVolumeClaim",
            "Secret",
            "Service"
        ]
    );
    // Every resource file is listed in the kustomization, and every listed file exists.
    let kustomization = by_kind(&docs, "Kustomization")[0];
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    listed.sort();
    let mut files: Vec<&str> = docs
        .iter()
        .filter(|(_, v)| v["kind"] != "Kustomization")
        .map(|(f, _)| f.as_str())
        .collect();
    files.sort();
    files.dedup();
    assert_eq!(listed, files);

    let deployment = by_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 9464);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 9464);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    // ConfigMap and Secret volumes are mounted as directories: a subPath mount never sees updates.
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        assert!(mount.get("subPath").is_none(), "subPath mount {mount:?}");
    }
    let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let config_path = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RESTORECTL_CONFIG")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(config_path.starts_with(mounts["config"]));

    // The config in the ConfigMap loads with the real loader, listens on all interfaces on the
    // probe port, and its paths are the volumes' mount points.
    let config_maps = by_kind(&docs, "ConfigMap");
    let cm = config_maps
        .iter()
        .find(|c| c["metadata"]["name"] == "restorectl-config")
        .unwrap();
    let text = cm["data"]["restorectl.yaml"].as_str().unwrap();
    let config = Config::from_yaml(text, Path::new(config_path)).unwrap();
    assert_eq!(config.listen.unwrap().to_string(), "0.0.0.0:9464");
    assert_eq!(config.jobs_dir, Path::new(mounts["jobs"]));
    assert_eq!(config.state_dir, Path::new(mounts["state"]));
    assert!(config.export_root.starts_with(mounts["state"]));
    assert_eq!(config.secrets_dir, Path::new(mounts["credentials"]));

    // Every job file in the jobs ConfigMap validates against that config.
    let jobs = config_maps
        .iter()
        .find(|c| c["metadata"]["name"] == "restorectl-jobs")
        .unwrap();
    let ctx = ValidationContext::new(&config);
    let data = jobs["data"].as_mapping().unwrap();
    assert!(!data.is_empty());
    for (name, text) in data {
        let name = name.as_str().unwrap();
        let report = parse_str(text.as_str().unwrap(), &config.jobs_dir.join(name), &ctx);
        let errors: Vec<String> = report.all_errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(report.jobs().count() >= 1, "{name} holds no job");
    }
    // The credentials the config names are in the Secret.
    let secret = by_kind(&docs, "Secret")[0];
    assert!(secret["stringData"].get("vb365-password").is_some());
}

#[test]
fn containerfile_is_multi_stage_non_root_with_tzdata_and_ca_certificates() {
    let text = read("deploy/Containerfile");
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].contains("rust:") && from[0].ends_with(" AS build"));
    assert!(from[1].contains("debian:") && from[1].contains("-slim"));
    assert!(text.contains("ca-certificates") && text.contains("tzdata"));
    assert!(text.contains("COPY --from=build"));
    let user = text.lines().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(text.contains("ENTRYPOINT [\"/usr/bin/restorectl\"]"));
    assert!(text.contains("CMD [\"daemon\"]"));
    assert!(text.contains("VOLUME [\"/var/lib/restorectl\"]"));
    assert!(text.contains("--locked"));
    // The image's binary is built with the project's build settings (mimalloc's commit mode).
    assert!(text.contains("COPY .cargo .cargo"), "{text}");
}
