//! The reference workload of PRODUCT.md, in `dev` mode: a PostgreSQL CRM of 1,000 subjects
//! with 21 rows each across 8 related tables; 100 Access requests applied at once until all are
//! Ready with their export bundles, then 100 Erasure requests until all are past soft delete
//! (data hidden in the live tables). Prints each time against its target, and the peak memory
//! (PSS) of the `dev` process (emulator included: it runs in the same process) and of the
//! worker subprocesses it ran, sampled from /proc.
//!
//! Run with `cargo bench --bench dev_throughput` (needs PostgreSQL: `scripts/setup/postgres.sh`).

#[path = "../tests/support/postgres.rs"]
mod pg_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use privacy_operator::api::DataSubjectRequest;
use serde_json::{Value, json};

const SUBJECTS: usize = 1000;
const REQUESTS: usize = 100;
const NS: &str = "default";
/// Targets of PRODUCT.md.
const ACCESS_TARGET: Duration = Duration::from_millis(4400);
const ERASURE_TARGET: Duration = Duration::from_millis(9600);
const MEMORY_TARGET_MIB: u64 = 125;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// The CRM fixture scaled from 500 to 1,000 contacts (21 rows each).
fn load_crm(pg: &pg_support::Postgres, fixtures: &Path) {
    pg.psql("postgres", "CREATE DATABASE dev_bench");
    pg.psql_file("dev_bench", &fixtures.join("schema.sql"));
    let data = std::fs::read_to_string(fixtures.join("data.sql")).expect("data.sql");
    let scaled = data
        .replace(
            "generate_series(1, 500)",
            &format!("generate_series(1, {SUBJECTS})"),
        )
        .replace(
            "generate_series(1, 1500)",
            &format!("generate_series(1, {})", SUBJECTS * 3),
        );
    let file = pg.dir().join("dev_bench_data.sql");
    std::fs::write(&file, scaled).expect("scaled data written");
    pg.psql_file("dev_bench", &file);
    pg.psql("dev_bench", "ANALYZE");
}

/// Proportional set size of a process, in KiB (0 once it is gone): resident memory with pages
/// shared between processes (the binary's text, mapped by the dev process and every worker)
/// divided among them, so the sum over processes is what they use together.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Samples the dev process and its children every 10 ms: peak of the dev process, of its
/// workers together, and of both at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    dev: Arc<AtomicU64>,
    workers: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let s = Sampler {
            stop: Arc::default(),
            dev: Arc::default(),
            workers: Arc::default(),
            total: Arc::default(),
        };
        let (stop, dev, workers, total) = (
            s.stop.clone(),
            s.dev.clone(),
            s.workers.clone(),
            s.total.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let own = rss_kib(pid);
                let kids: u64 = children(pid).into_iter().map(rss_kib).sum();
                dev.fetch_max(own, Ordering::Relaxed);
                workers.fetch_max(kids, Ordering::Relaxed);
                total.fetch_max(own + kids, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        s
    }

    fn peaks_mib(&self) -> (u64, u64, u64) {
        (
            self.dev.load(Ordering::Relaxed) / 1024,
            self.workers.load(Ordering::Relaxed) / 1024,
            self.total.load(Ordering::Relaxed) / 1024,
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(data: &Path) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("PRIVACY_OPERATOR_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("privacy-operator dev starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "dev did not start within 60s");
        match lines.next() {
            Some(Ok(line)) if line.contains("press Ctrl-C") => break,
            Some(Ok(_)) => continue,
            _ => panic!("dev exited before it was ready"),
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Dev(child)
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client")
}

async fn create(client: &kube::Client, obj: Value) {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            obj["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map_or("", |(g, _)| g),
            obj["apiVersion"]
                .as_str()
                .map(|v| v.rsplit('/').next().unwrap_or(v))
                .unwrap_or("v1"),
            obj["kind"].as_str().unwrap_or_default(),
        )),
    );
    let dynamic: kube::api::DynamicObject = serde_json::from_value(obj).expect("object");
    api.create(&PostParams::default(), &dynamic)
        .await
        .expect("created");
}

fn request(name: &str, type_: &str, contact: usize) -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "type": type_,
            "regulation": "GDPR",
            "subject": {"identifiers": {"email": format!("contact{contact}@example.com")}},
            "verification": {
                "method": "AccountLogin",
                "verifiedBy": "bench",
                "verifiedAt": "2026-01-01T00:00:00Z"
            }
        }
    })
}

fn condition_true(r: &DataSubjectRequest, type_: &str) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

/// Lists until `n` requests with the prefix have `condition`; returns when that happened.
async fn wait_all(api: &Api<DataSubjectRequest>, prefix: &str, condition: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|r| {
                r.metadata
                    .name
                    .as_deref()
                    .is_some_and(|x| x.starts_with(prefix))
            })
            .filter(|r| condition_true(r, condition))
            .count();
        if done >= n {
            return;
        }
        let failed: Vec<_> = list
            .items
            .iter()
            .filter(|r| condition_true(r, "Failed") || condition_true(r, "Stalled"))
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        assert!(failed.is_empty(), "requests failed: {failed:?}");
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} {prefix}* requests reached {condition} within 300s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

async fn bench() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm");
    let pg = pg_support::shared();
    load_crm(pg, &fixtures);

    let data = tempfile::tempdir().expect("data dir");
    let dev = start_dev(data.path());
    let sampler = Sampler::start(dev.0.id());
    let kubeconfig: PathBuf = data.path().join("kubeconfig");
    let client = client(&kubeconfig).await;

    create(
        &client,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "crm-db", "namespace": NS},
            "stringData": {"url": pg.url("dev_bench")}
        }),
    )
    .await;
    let spec: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(fixtures.join("datasystem.yaml")).expect("datasystem.yaml"),
    )
    .expect("datasystem yaml");
    create(
        &client,
        json!({
            "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSystem",
            "metadata": {"name": "crm", "namespace": NS},
            "spec": spec
        }),
    )
    .await;

    let requests: Api<DataSubjectRequest> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    futures::future::join_all((1..=REQUESTS).map(|i| {
        let client = client.clone();
        async move { create(&client, request(&format!("access-{i}"), "Access", i)).await }
    }))
    .await;
    wait_all(&requests, "access-", "Ready", REQUESTS).await;
    let access = started.elapsed();

    let started = Instant::now();
    futures::future::join_all((1..=REQUESTS).map(|i| {
        let client = client.clone();
        async move {
            create(
                &client,
                request(&format!("erase-{i}"), "Erasure", REQUESTS + i),
            )
            .await
        }
    }))
    .await;
    wait_all(&requests, "erase-", "SoftDeleted", REQUESTS).await;
    let erasure = started.elapsed();
    let hidden = pg.psql(
        "dev_bench",
        &format!(
            "SELECT count(*) FROM crm.contacts WHERE deleted_at IS NULL AND id BETWEEN {} AND {}",
            REQUESTS + 1,
            2 * REQUESTS
        ),
    );
    let (dev_mib, workers_mib, total_mib) = sampler.peaks_mib();
    drop(sampler);
    drop(dev);

    println!("dev mode, PostgreSQL CRM of {SUBJECTS} subjects x 21 rows");
    println!(
        "  {REQUESTS} Access requests, all Ready with export bundles: {:.2} s (target {:.1} s: {})",
        access.as_secs_f64(),
        ACCESS_TARGET.as_secs_f64(),
        verdict(access <= ACCESS_TARGET)
    );
    println!(
        "  {REQUESTS} Erasure requests, all past soft delete: {:.2} s (target {:.1} s: {}); live contacts left among them: {}",
        erasure.as_secs_f64(),
        ERASURE_TARGET.as_secs_f64(),
        verdict(erasure <= ERASURE_TARGET),
        hidden.trim()
    );
    println!(
        "  peak memory (PSS): dev process (emulator included) {dev_mib} MiB, workers together {workers_mib} MiB, both at once {total_mib} MiB (target < {MEMORY_TARGET_MIB} MiB without the emulator: {})",
        verdict(total_mib < MEMORY_TARGET_MIB)
    );
}
