//! The chaos run (`make chaos`, `payhub-bench --chaos`): the bench's
//! installation with two replicas of every service, orders at a modest rate
//! through every door, and on a seeded schedule (printed, and written to the
//! report): SIGKILLed service processes started again a little later, a
//! RabbitMQ restart (`rabbitmqctl stop_app` / `start_app`), a PostgreSQL
//! restart (`pg_ctlcluster ... restart`) and a shop endpoint answering 503
//! for a while. Then, after a drain long enough for the retries, the bench's
//! verification pass (every order paid exactly once, the shop notified under
//! one webhook id) plus: no shop webhook of any status under two ids, and no
//! dead letter anywhere. chaos.md and chaos.json say what was injected, when,
//! and what came of it; any order lost or doubled fails the run.

use crate::analysis::{self, Verification};
use crate::cluster::{Cluster, Settings};
use crate::load::{self, Doors, Payer, Sample, StopToken};
use crate::procstat::{self, Target};
use crate::report::LogFinding;
use crate::stats::now_unix;
use crate::{Args, door_mix, drain, say};
use anyhow::Context;
use payhub_queue::QueueSpec;
use payhub_queue::dead_letters::{DeadLetterAdmin, QueueDepths};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment of every chaos service: retries quick enough to finish
/// within the drain.
pub fn service_env(args: &Args) -> Vec<(String, String)> {
    vec![
        ("PAYHUB_RETRY_DELAY_MS".into(), args.retry_delay_ms.to_string()),
        ("PAYHUB_MAX_ATTEMPTS".into(), args.max_attempts.to_string()),
    ]
}

/// What can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL of one service process, started again after `hold` s.
    Kill,
    /// `rabbitmqctl stop_app`, `start_app` after `hold` s.
    RabbitmqRestart,
    /// `pg_ctlcluster <version> main restart` (fast shutdown, start).
    PostgresRestart,
    /// The shop's webhook endpoint answers 503 for `hold` s.
    ShopOutage,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::RabbitmqRestart => "rabbitmq",
            FaultKind::PostgresRestart => "postgres",
            FaultKind::ShopOutage => "shop",
        }
    }
}

/// One fault of the schedule, seconds from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    /// The process killed; empty for the others.
    pub target: String,
    pub at: f64,
    pub hold: f64,
}

/// What was done, seconds from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub kind: FaultKind,
    pub target: String,
    pub planned_at: f64,
    pub started_at: f64,
    /// When it was undone (the process started again, the broker's app
    /// started, the shop recovered, PostgreSQL accepting again).
    pub ended_at: Option<f64>,
    pub detail: String,
    pub error: Option<String>,
}

/// splitmix64: a small, seedable, reproducible generator (the schedule must
/// be the same for the same seed on every machine).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The schedule over `duration` s of load. The three one-off faults
/// (RabbitMQ, PostgreSQL, the shop) get one slot each of 10 %..85 % of the
/// load, in a random order and at a random time inside their slot, so they
/// never overlap; the kills fall anywhere in 5 %..90 %, never on a process
/// that is still down from an earlier kill.
pub fn plan(rng: &mut Rng, args: &Args, duration: f64, kills: u32, targets: &[String]) -> Vec<Planned> {
    let skip = |k: FaultKind| args.skip_faults.iter().any(|s| s == k.name());
    let mut out = Vec::new();
    let mut once: Vec<(FaultKind, f64)> = [
        (FaultKind::ShopOutage, args.shop_outage),
        (FaultKind::RabbitmqRestart, args.broker_down),
        (FaultKind::PostgresRestart, 0.0),
    ]
    .into_iter()
    .filter(|(k, _)| !skip(*k))
    .collect();
    // Fisher-Yates.
    for i in (1..once.len()).rev() {
        let j = rng.below(i + 1);
        once.swap(i, j);
    }
    let (lo, hi) = (0.10 * duration, 0.85 * duration);
    let slot = (hi - lo) / once.len().max(1) as f64;
    for (i, (kind, hold)) in once.into_iter().enumerate() {
        let start = lo + slot * i as f64;
        let latest = (start + slot - hold).max(start);
        out.push(Planned {
            kind,
            target: String::new(),
            at: rng.range(start, latest),
            hold,
        });
    }
    if !skip(FaultKind::Kill) && !targets.is_empty() {
        let mut down_until: HashMap<&str, f64> = HashMap::new();
        let mut times: Vec<f64> = (0..kills)
            .map(|_| rng.range(0.05 * duration, 0.90 * duration))
            .collect();
        times.sort_by(f64::total_cmp);
        for at in times {
            let hold = rng.range(1.0, args.restart_delay.max(1.0));
            // A process that is up at `at` (a few tries, then give up on this kill).
            for _ in 0..8 {
                let t = targets[rng.below(targets.len())].as_str();
                if down_until.get(t).is_none_or(|u| *u + 1.0 < at) {
                    down_until.insert(t, at + hold);
                    out.push(Planned {
                        kind: FaultKind::Kill,
                        target: t.to_string(),
                        at,
                        hold,
                    });
                    break;
                }
            }
        }
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    out
}

/// The PostgreSQL cluster version `pg_ctlcluster` restarts (the first
/// directory of /etc/postgresql, as the outage tests pick it).
fn pg_version() -> Option<String> {
    let mut v: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v.into_iter().next()
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn sh(cmd: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .await
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether this run stopped RabbitMQ's app and has not started it again.
static BROKER_STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts RabbitMQ's app again if this run stopped it and was interrupted
/// before starting it (the shared broker must not stay stopped).
pub fn undo_broker_stop() {
    if BROKER_STOPPED.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg("rabbitmqctl -q start_app && rabbitmqctl -q await_startup")
            .status();
    }
}

/// Why a RabbitMQ restart would leave the broker refusing connections, if
/// it would: its file-handle cache (limit from `ulimit -n` at boot, which a
/// restart of the app sets again) already nearly used up by quorum queues,
/// so a restarted broker has no handle left for an AMQP socket.
async fn broker_file_handles_short() -> Option<String> {
    let eval = |expr: &'static str| async move {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "eval", expr])
            .output()
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let info = eval("file_handle_cache:info([total_used]).").await?;
    let used: u64 = info
        .split(|c: char| !c.is_ascii_digit())
        .find(|x| !x.is_empty())?
        .parse()
        .ok()?;
    // The limit a restarted app sets: the VM's `ulimit -n` less RabbitMQ's
    // reserve (1024 -> 927), whatever it was raised to at run time.
    let pid = eval("os:getpid().").await?.trim().trim_matches('"').to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let limit = soft.saturating_sub(97);
    (used * 10 > limit * 8).then(|| {
        format!(
            "the broker holds {used} file handles and a restarted broker allows {limit} (`ulimit -n` {soft}): \
             after a restart it would accept no connection; raise its ulimit or delete leftover queues \
             (`scripts/ensure-services.sh --test` resets the test vhost)"
        )
    })
}

async fn shop_fault(http: &reqwest::Client, sandbox_url: &str, body: serde_json::Value) -> Result<(), String> {
    let r = http
        .post(format!("{sandbox_url}/sandbox/faults/shop"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("sandbox fault control: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("sandbox fault control answered {}", r.status()))
    }
}

/// One step of the schedule: a fault begins, or ends.
struct Action {
    at: f64,
    fault: usize,
    begin: bool,
}

/// Runs the schedule from `t0` (Unix s, the load's start): each fault begun
/// and ended at its time (steps run one after another, so a slow restart
/// delays what follows; the actual times are recorded).
async fn inject(cl: &mut Cluster, settings: &Settings, schedule: &[Planned], t0: f64, wall: Instant) -> Vec<Injected> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let pg = pg_version();
    let mut actions: Vec<Action> = Vec::new();
    for (i, p) in schedule.iter().enumerate() {
        actions.push(Action {
            at: p.at,
            fault: i,
            begin: true,
        });
        if p.kind != FaultKind::PostgresRestart {
            actions.push(Action {
                at: p.at + p.hold,
                fault: i,
                begin: false,
            });
        }
    }
    actions.sort_by(|a, b| a.at.total_cmp(&b.at).then(b.begin.cmp(&a.begin)));
    let mut done: Vec<Injected> = schedule
        .iter()
        .map(|p| Injected {
            kind: p.kind,
            target: p.target.clone(),
            planned_at: p.at,
            started_at: f64::NAN,
            ended_at: None,
            detail: String::new(),
            error: None,
        })
        .collect();
    let rel = || now_unix() - t0;
    for a in actions {
        let wait = a.at - rel();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let p = &schedule[a.fault];
        let d = &mut done[a.fault];
        if !a.begin && d.error.is_some() {
            continue; // it never began
        }
        let result: Result<String, String> = match (p.kind, a.begin) {
            (FaultKind::Kill, true) => {
                d.started_at = rel();
                cl.kill(&p.target)
                    .await
                    .map(|pid| format!("SIGKILL pid {pid}"))
                    .map_err(|e| format!("{e:#}"))
            }
            (FaultKind::Kill, false) => cl
                .restart(settings, &p.target)
                .map(|pid| format!("started again as pid {pid}"))
                .map_err(|e| format!("{e:#}")),
            (FaultKind::RabbitmqRestart, true) => {
                d.started_at = rel();
                BROKER_STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
                sh("rabbitmqctl -q stop_app").await.map(|()| "stop_app".into())
            }
            (FaultKind::RabbitmqRestart, false) => {
                let r = sh("rabbitmqctl -q start_app && rabbitmqctl -q await_startup")
                    .await
                    .map(|()| "start_app".into());
                BROKER_STOPPED.store(false, std::sync::atomic::Ordering::SeqCst);
                r
            }
            (FaultKind::PostgresRestart, _) => {
                d.started_at = rel();
                match &pg {
                    Some(v) => sh(&format!("pg_ctlcluster --skip-systemctl-redirect {v} main restart"))
                        .await
                        .map(|()| format!("pg_ctlcluster {v} main restart")),
                    None => Err("no cluster under /etc/postgresql".into()),
                }
            }
            (FaultKind::ShopOutage, true) => {
                d.started_at = rel();
                shop_fault(
                    &http,
                    &cl.sandbox_url,
                    serde_json::json!({"mode": "status", "status": 503, "always": true}),
                )
                .await
                .map(|()| "shop answers 503".into())
            }
            (FaultKind::ShopOutage, false) => {
                shop_fault(&http, &cl.sandbox_url, serde_json::json!({"mode": "recover"}))
                    .await
                    .map(|()| "shop recovered".into())
            }
        };
        let now = rel();
        if !a.begin || p.kind == FaultKind::PostgresRestart {
            d.ended_at = Some(now);
        }
        match result {
            Ok(what) => {
                say(
                    wall,
                    &format!(
                        "chaos t+{now:.1}s: {} {}{what}",
                        p.kind.name(),
                        if p.target.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", p.target)
                        }
                    ),
                );
                if d.detail.is_empty() {
                    d.detail = what;
                } else {
                    d.detail = format!("{}; {what}", d.detail);
                }
            }
            Err(e) => {
                eprintln!("chaos t+{now:.1}s: {} {} FAILED: {e}", p.kind.name(), p.target);
                d.error = Some(e);
            }
        }
    }
    done
}

/// Everything the chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResult {
    pub timestamp: String,
    pub run_id: String,
    pub command_line: String,
    pub seed: u64,
    pub rate: f64,
    pub load_seconds: f64,
    pub replicas: usize,
    pub doors: Vec<String>,
    pub retry_delay_ms: u64,
    pub max_attempts: u32,
    pub processes: Vec<String>,
    pub schedule: Vec<Planned>,
    pub injected: Vec<Injected>,
    /// Faults that took effect, by kind.
    pub faults_by_kind: BTreeMap<String, u32>,
    /// Fault kinds that could not be injected here, and why.
    pub not_injected: Vec<String>,
    pub orders: usize,
    /// Orders payhub took (HTTP 201 / broker confirm) but never paid or
    /// never told the shop of. Submissions the shop gave up on are
    /// `verification.door_errors` (they fail the run too).
    pub lost: usize,
    /// Orders paid twice, or with a shop webhook of one status under two ids.
    pub doubled: usize,
    /// Orders whose shop got one status (any) under two webhook ids.
    pub doubled_webhooks: usize,
    /// Submissions that needed more than one try (shop-side retries).
    pub retried_submissions: usize,
    pub dead_letters: Vec<QueueDepths>,
    pub dead_letter_examples: Vec<String>,
    pub drained: bool,
    pub drain_seconds: f64,
    pub verification: Verification,
    /// Processes that exited on their own during the run.
    pub exited: Vec<(String, String)>,
    pub wall_seconds: f64,
    pub shutdown_problems: Vec<String>,
    pub log_findings: Vec<LogFinding>,
    pub passed: bool,
}

pub async fn run(
    args: &Args,
    settings: &Settings,
    cl: &mut Cluster,
    wall: Instant,
    stamp: &str,
) -> anyhow::Result<ChaosResult> {
    anyhow::ensure!(args.duration > 0.0, "--duration must be above 0");
    let seed = args
        .seed
        .unwrap_or_else(|| now_unix().to_bits() ^ u64::from(std::process::id()));
    let want_amqp = args.doors.contains(&load::Door::Amqp);
    cl.start(settings, want_amqp).await?;
    say(
        wall,
        &format!(
            "chaos: sandbox and {} service processes ({} per service) started and ready",
            cl.service_urls.len(),
            settings.replicas
        ),
    );
    let amqp = cl
        .amqp_shop
        .as_ref()
        .map(|a| (a.url.as_str(), a.user.as_str(), cl.topology.orders_exchange.as_str()));
    let doors = Arc::new(
        Doors::connect(&cl.ingress_url, &cl.api_key, amqp)
            .await?
            .retrying(&cl.ingress_urls, Duration::from_secs_f64(args.submit_retry)),
    );
    let mix = door_mix(args, &doors)?;

    // The service processes' pids change with every restart: the sampler
    // watches the servers only (its queue depths are what drain needs).
    let ticks = procstat::clock_ticks();
    let targets: Vec<(String, Target)> = vec![
        ("rabbitmq".into(), Target::Named("beam.smp")),
        ("postgresql".into(), Target::Named("postgres")),
    ];
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = StopToken::new();
    let sampler = tokio::spawn(load::sample(
        args.amqp_url.clone(),
        cl.queues(),
        targets,
        ticks,
        stop.clone(),
        samples.clone(),
    ));
    let payer = Arc::new(Payer::new(cl.store.pool.clone(), &cl.sandbox_url)?);
    let payer_task = tokio::spawn(payer.clone().run(stop.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;

    let count = args
        .orders
        .unwrap_or_else(|| (args.rate * args.duration).round().max(1.0) as u64);
    let load_seconds = count as f64 / args.rate;
    let kills = args.kills.unwrap_or(((load_seconds / 10.0).round() as u32).max(2));
    let victims: Vec<String> = cl.service_urls.iter().map(|(n, _)| n.clone()).collect();
    let mut not_injected = Vec::new();
    let mut args_eff = args.clone();
    if !have("rabbitmqctl") {
        args_eff.skip_faults.push("rabbitmq".into());
        not_injected.push("rabbitmq: rabbitmqctl is not on this machine".to_string());
    }
    if !have("pg_ctlcluster") || pg_version().is_none() {
        args_eff.skip_faults.push("postgres".into());
        not_injected.push("postgres: pg_ctlcluster or /etc/postgresql/<version> is missing".to_string());
    }
    if !args_eff.skip_faults.iter().any(|f| f == "rabbitmq")
        && let Some(why) = broker_file_handles_short().await
    {
        args_eff.skip_faults.push("rabbitmq".into());
        not_injected.push(format!("rabbitmq: {why}"));
    }
    let schedule = plan(&mut Rng::new(seed), &args_eff, load_seconds, kills, &victims);
    say(
        wall,
        &format!(
            "chaos: seed {seed}; {count} orders at {} orders/s through {} for {load_seconds:.0} s; schedule:",
            args.rate,
            mix.iter().map(|d| d.name()).collect::<Vec<_>>().join("+")
        ),
    );
    for p in &schedule {
        println!(
            "           t+{:>6.1}s  {:<9} {:<20} for {:.1} s",
            p.at,
            p.kind.name(),
            p.target,
            p.hold
        );
    }
    for n in &not_injected {
        eprintln!("warning: not injected: {n}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = now_unix();
    let (offered, injected) = tokio::join!(
        load::offer(&doors, &mix, 0, "chaos", args.rate, count, &settings.run_id),
        inject(cl, settings, &schedule, t0, wall),
    );
    say(
        wall,
        "chaos: load done, every fault undone; waiting for the services to be ready",
    );
    if let Err(e) = cl.wait_ready(Duration::from_secs(90)).await {
        eprintln!("warning: {e:#}");
    }
    let drain_start = Instant::now();
    let drained = drain(&doors, &payer, cl, &http, &samples, args.drain_timeout).await;
    // Long enough for a late retry to show a second webhook id.
    tokio::time::sleep(Duration::from_millis((2 * args.retry_delay_ms).max(3000))).await;
    let drain_seconds = drain_start.elapsed().as_secs_f64();
    say(
        wall,
        &format!(
            "chaos: {} after {drain_seconds:.0} s",
            if drained {
                "every order at the shop"
            } else {
                "NOT drained within --drain-timeout"
            }
        ),
    );
    stop.cancel();
    let _ = payer_task.await;
    let _ = sampler.await;

    let rb = analysis::read_back(&cl.store.pool, &cl.sandbox_url, &http).await?;
    let subs = doors.submissions.lock().map(|v| v.clone()).unwrap_or_default();
    let pays = payer.payments.lock().map(|v| v.clone()).unwrap_or_default();
    let recs = analysis::records(&subs, &pays, &rb);
    let verification = analysis::verify(&recs, &rb);

    // Any status under two webhook ids is a doubled notification.
    let mut ids: HashMap<(uuid::Uuid, String, String), HashSet<&str>> = HashMap::new();
    for h in &rb.hooks {
        if let Some(o) = h.order_id {
            ids.entry((o, h.typ.clone(), h.status.clone().unwrap_or_default()))
                .or_default()
                .insert(h.id.as_str());
        }
    }
    let doubled_orders: HashSet<uuid::Uuid> = ids
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((o, _, _), _)| *o)
        .collect();
    let doubled_paid: HashSet<uuid::Uuid> = recs
        .iter()
        .filter(|r| r.paid_rows > 1)
        .filter_map(|r| r.order_id)
        .collect();
    let doubled = doubled_orders.union(&doubled_paid).count();
    let lost =
        verification.door_errors + verification.lost_before_db + verification.never_paid + verification.never_notified;

    let (dead_letters, dead_letter_examples) = dead_letters(&args.amqp_url, cl).await?;
    let parked: u32 = dead_letters.iter().map(|d| d.dead_letters).sum();
    let exited = cl.exited();
    let mut faults_by_kind: BTreeMap<String, u32> = BTreeMap::new();
    for i in injected.iter().filter(|i| i.error.is_none()) {
        *faults_by_kind.entry(i.kind.name().to_string()).or_insert(0) += 1;
    }
    let passed = lost == 0
        && verification.door_errors == 0
        && doubled == 0
        && parked == 0
        && verification.unverified_webhooks == 0
        && injected.iter().all(|i| i.error.is_none())
        && exited.is_empty();

    let out_dir = settings.log_dir.parent().context("the logs are inside the results")?;
    analysis::write_jsonl(&out_dir.join("orders.jsonl"), &recs)?;
    let _ = offered;

    Ok(ChaosResult {
        timestamp: stamp.to_string(),
        run_id: settings.run_id.clone(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        seed,
        rate: args.rate,
        load_seconds,
        replicas: settings.replicas,
        doors: mix.iter().map(|d| d.name().to_string()).collect(),
        retry_delay_ms: args.retry_delay_ms,
        max_attempts: args.max_attempts,
        processes: victims,
        schedule,
        injected,
        faults_by_kind,
        not_injected,
        orders: recs.len(),
        lost,
        doubled,
        doubled_webhooks: doubled_orders.len(),
        retried_submissions: subs.iter().filter(|s| s.tries > 1).count(),
        dead_letters,
        dead_letter_examples,
        drained,
        drain_seconds,
        verification,
        exited,
        wall_seconds: 0.0,
        shutdown_problems: Vec::new(),
        log_findings: Vec::new(),
        passed,
    })
}

/// Every dead-letter queue's depth, and up to five parked messages of each
/// one that is not empty (left in place).
async fn dead_letters(amqp_url: &str, cl: &Cluster) -> anyhow::Result<(Vec<QueueDepths>, Vec<String>)> {
    let admin = DeadLetterAdmin::connect(amqp_url, cl.topology.clone())
        .await
        .context("connecting to list the dead letters")?;
    let depths = admin.depths().await.context("reading the dead-letter queues")?;
    let mut examples = Vec::new();
    for spec in QueueSpec::ALL {
        let q = cl.topology.work_queue(&spec);
        if depths.iter().any(|d| d.queue == q && d.dead_letters > 0) {
            for d in admin.list(&spec, 5).await.unwrap_or_default() {
                examples.push(format!(
                    "{q}: {} {} reason {} errors {:?}",
                    d.event_type.as_deref().unwrap_or("-"),
                    d.message_id.as_deref().unwrap_or("-"),
                    d.story.reason.as_deref().unwrap_or("-"),
                    d.story.errors
                ));
            }
        }
    }
    admin.close().await;
    Ok((depths, examples))
}

pub fn write(dir: &Path, r: &ChaosResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("chaos.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("chaos.md"), markdown(r))?;
    Ok(())
}

pub fn markdown(r: &ChaosResult) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let v = &r.verification;
    let _ = writeln!(s, "# payhub chaos run {}\n", r.run_id);
    let _ = writeln!(
        s,
        "**{}**: {} orders, {} lost, {} doubled, {} never got in, {} dead letters; faults injected: {}.\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.orders,
        r.lost,
        r.doubled,
        r.verification.door_errors,
        r.dead_letters.iter().map(|d| d.dead_letters).sum::<u32>(),
        if r.faults_by_kind.is_empty() {
            "none".to_string()
        } else {
            r.faults_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(s, "- command: `{}`", r.command_line);
    let _ = writeln!(
        s,
        "- seed {} (the same seed gives the same schedule); {} orders/s for {:.0} s through {}",
        r.seed,
        r.rate,
        r.load_seconds,
        r.doors.join("+")
    );
    let _ = writeln!(
        s,
        "- {} processes per service ({}); PAYHUB_RETRY_DELAY_MS={}, PAYHUB_MAX_ATTEMPTS={}",
        r.replicas,
        r.processes.join(", "),
        r.retry_delay_ms,
        r.max_attempts
    );
    let _ = writeln!(
        s,
        "- drain: {} after {:.0} s; run took {:.0} s",
        if r.drained { "complete" } else { "NOT complete" },
        r.drain_seconds,
        r.wall_seconds
    );
    for n in &r.not_injected {
        let _ = writeln!(s, "- not injected: {n}");
    }
    let _ = writeln!(
        s,
        "\n## What was injected, and when (seconds from the start of the load)\n"
    );
    let _ = writeln!(s, "| planned | began | undone | fault | target | what | error |");
    let _ = writeln!(s, "|---:|---:|---:|---|---|---|---|");
    for i in &r.injected {
        let _ = writeln!(
            s,
            "| {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            i.planned_at,
            i.started_at,
            i.ended_at.map(|e| format!("{e:.1}")).unwrap_or_else(|| "-".into()),
            i.kind.name(),
            i.target,
            i.detail,
            i.error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(s, "\n## Figures\n");
    let _ = writeln!(s, "| figure | count |\n|---|---:|");
    for (k, n) in [
        ("orders submitted", r.orders),
        (
            "submissions retried by the shop (door down or refusing)",
            r.retried_submissions,
        ),
        ("never got in: the shop gave up retrying (fails the run)", v.door_errors),
        ("lost before the database", v.lost_before_db),
        ("never paid", v.never_paid),
        ("never notified of paid", v.never_notified),
        ("**lost** (taken by payhub, then not paid or not notified)", r.lost),
        ("paid twice", v.duplicate_paid),
        ("a status under two webhook ids", r.doubled_webhooks),
        ("**doubled** (orders)", r.doubled),
        ("unverified webhook signatures", v.unverified_webhooks),
        ("same webhook id redelivered (allowed)", v.webhook_redeliveries),
        ("payment webhooks resent by the provider", v.payment_resends as usize),
    ] {
        let _ = writeln!(s, "| {k} | {n} |");
    }
    let _ = writeln!(s, "\n## Dead-letter queues\n");
    for d in &r.dead_letters {
        let _ = writeln!(
            s,
            "- {}: {} dead letters ({} ready, {} retrying)",
            d.queue, d.dead_letters, d.ready, d.retrying
        );
    }
    for e in &r.dead_letter_examples {
        let _ = writeln!(s, "  - {e}");
    }
    if !v.lost_examples.is_empty() || !v.door_error_examples.is_empty() {
        let _ = writeln!(s, "\n## Lost orders (examples)\n");
        for e in v.door_error_examples.iter().chain(&v.lost_examples) {
            let _ = writeln!(s, "- {e}");
        }
    }
    if !r.exited.is_empty() {
        let _ = writeln!(s, "\n## Processes that exited on their own\n");
        for (n, st) in &r.exited {
            let _ = writeln!(s, "- {n}: {st}");
        }
    }
    let noisy: Vec<&LogFinding> = r.log_findings.iter().filter(|f| f.panics > 0 || f.errors > 0).collect();
    if !noisy.is_empty() {
        let _ = writeln!(s, "\n## Logs (logs/)\n");
        for f in noisy {
            let _ = writeln!(
                s,
                "- {}: {} ERROR lines, {} panics{}",
                f.process,
                f.errors,
                f.panics,
                f.first_panic
                    .as_deref()
                    .map(|p| format!("; first: {p}"))
                    .unwrap_or_default()
            );
        }
    }
    for p in &r.shutdown_problems {
        let _ = writeln!(s, "- shutdown: {p}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_one_offs_never_overlap() {
        let args = Args::parse_from(["payhub-bench", "--chaos"]);
        let targets: Vec<String> = ["ingress", "ingress-2", "notifier", "notifier-2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = plan(&mut Rng::new(7), &args, 60.0, 6, &targets);
        let b = plan(&mut Rng::new(7), &args, 60.0, 6, &targets);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let kinds: Vec<FaultKind> = a.iter().map(|p| p.kind).collect();
        for k in [
            FaultKind::RabbitmqRestart,
            FaultKind::PostgresRestart,
            FaultKind::ShopOutage,
        ] {
            assert_eq!(kinds.iter().filter(|x| **x == k).count(), 1, "{k:?}");
        }
        let mut once: Vec<&Planned> = a.iter().filter(|p| p.kind != FaultKind::Kill).collect();
        once.sort_by(|x, y| x.at.total_cmp(&y.at));
        for w in once.windows(2) {
            assert!(w[0].at + w[0].hold <= w[1].at + 1e-9, "{:?} overlaps {:?}", w[0], w[1]);
        }
        for p in &a {
            assert!(p.at >= 0.0 && p.at + p.hold <= 60.0, "{p:?}");
        }
        // No process is killed again while it is still down.
        let kills: Vec<&Planned> = a.iter().filter(|p| p.kind == FaultKind::Kill).collect();
        for (i, k) in kills.iter().enumerate() {
            for later in &kills[i + 1..] {
                assert!(
                    k.target != later.target || later.at > k.at + k.hold,
                    "{k:?} / {later:?}"
                );
            }
        }
        let skipped = Args::parse_from(["payhub-bench", "--chaos", "--skip-faults", "postgres,kill"]);
        let c = plan(&mut Rng::new(7), &skipped, 60.0, 6, &targets);
        assert!(
            c.iter()
                .all(|p| matches!(p.kind, FaultKind::RabbitmqRestart | FaultKind::ShopOutage))
        );
    }
}
