//! `payhub-bench` (`make bench`): how many orders per second payhub sustains
//! on this machine and how long each stage takes, told truthfully.
//!
//! One run: the machine's ceilings first (RabbitMQ relaying persistent,
//! confirmed 1 KB messages through five quorum queues; PostgreSQL's
//! single-row commit rate), then the whole pipeline as separate processes
//! (six services and the sandbox from target/release, a fresh database,
//! exchange and queue prefix) under open-model load through both doors, every
//! order paid in the sandbox: a sustained phase, then rising steps until the
//! backlog grows (the knee). Every order is then checked (paid exactly once,
//! the shop notified once with a valid signature) and the figures written to
//! bench-results/<timestamp>/ (result.json, summary.md, timeline.svg,
//! orders.jsonl, the services' logs). Exit code 1 when anything was lost or
//! duplicated, 2 when the bench itself could not run.
//!
//! `--chaos` (`make chaos`) runs the same pipeline with two replicas of every
//! service under faults on a seeded schedule instead (see chaos.rs).

mod analysis;
mod ceiling;
mod chaos;
mod cluster;
mod load;
mod procstat;
mod report;
mod stats;
mod svg;

use anyhow::Context;
use clap::Parser;
use load::{Door, Doors, Offered, Payer, Sample, StopToken};
use procstat::Target;
use stats::now_unix;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The knee's offered rates, from one comma-separated argument; an empty
/// one is no steps at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps(pub Vec<f64>);

impl std::ops::Deref for Steps {
    type Target = Vec<f64>;
    fn deref(&self) -> &Vec<f64> {
        &self.0
    }
}

fn parse_steps(s: &str) -> Result<Steps, String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.parse::<f64>().map_err(|e| format!("{r:?}: {e}")))
        .collect::<Result<Vec<f64>, String>>()
        .map(Steps)
}

/// Open-model load through payhub's whole pipeline, with a verification pass
/// and the machine's RabbitMQ and PostgreSQL ceilings measured in the same run.
#[derive(Debug, Clone, Parser)]
#[command(name = "payhub-bench", version)]
pub struct Args {
    /// Orders per second offered in the sustained phase (constant arrival rate).
    #[arg(long, default_value_t = 25.0)]
    pub rate: f64,
    /// Seconds of the sustained phase.
    #[arg(long, default_value_t = 45.0)]
    pub duration: f64,
    /// Orders in the sustained phase (overrides --duration: orders / rate seconds).
    #[arg(long)]
    pub orders: Option<u64>,
    /// Knee search: offered rates (orders/s), one step each, stopping at the
    /// first step that cannot keep up. Empty (--steps '') skips it.
    #[arg(
        long,
        value_parser = parse_steps,
        default_value = "30,40,50,65,80,100,130,160,200,250,320,400"
    )]
    pub steps: Steps,
    /// Seconds per knee step.
    #[arg(long, default_value_t = 10.0)]
    pub step_seconds: f64,
    /// Seconds after a step's last order within which its orders must have
    /// reached the shop to count as completed by that step.
    #[arg(long, default_value_t = 3.0)]
    pub grace: f64,
    /// A step keeps up when at least this share of its orders completed
    /// within the grace and the work queues did not keep growing.
    #[arg(long, default_value_t = 0.95)]
    pub knee_threshold: f64,
    /// Doors orders come through, taking turns: http, amqp.
    #[arg(long, value_delimiter = ',', default_value = "http,amqp")]
    pub doors: Vec<Door>,
    /// Seconds to wait, after the load, for every order to reach the shop
    /// (anything later counts as lost).
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
    /// Seconds the RabbitMQ relay ceiling is measured (after 2 s of warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub relay_seconds: f64,
    /// Messages in the relay chain at once.
    #[arg(long, default_value_t = 256)]
    pub relay_in_flight: usize,
    /// Seconds the PostgreSQL commit ceiling is measured (after 1 s of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub pg_seconds: f64,
    /// Concurrent connections of the PostgreSQL commit ceiling.
    #[arg(long, default_value_t = 16)]
    pub pg_connections: u32,
    /// Skip the ceiling measurements.
    #[arg(long)]
    pub skip_ceiling: bool,
    /// Measure only the ceilings (no payhub, no files) and exit.
    #[arg(long, conflicts_with = "skip_ceiling")]
    pub ceiling_only: bool,
    /// PAYHUB_DB_MAX_CONNECTIONS of every service (the deploy/ default is 10).
    #[arg(long, default_value_t = 10)]
    pub db_max_connections: u32,
    /// PostgreSQL server (no database: the bench makes its own).
    #[arg(
        long,
        env = "PAYHUB_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub pg_url: String,
    #[arg(
        long,
        env = "PAYHUB_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Where bench-results/<timestamp>/ goes.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Leave the database, queues and broker user in place (for inspection).
    #[arg(long)]
    pub keep: bool,
    /// The chaos run instead of the bench: two replicas of every service,
    /// orders at --rate for --duration s through every door, and on a seeded
    /// schedule SIGKILLed services, a RabbitMQ and a PostgreSQL restart and a
    /// failing shop endpoint; then every order verified (chaos.md, chaos.json).
    #[arg(long, conflicts_with_all = ["ceiling_only"])]
    pub chaos: bool,
    /// Chaos: seed of the fault schedule (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Chaos: service processes killed with SIGKILL (default: one per 10 s of load, at least 2).
    #[arg(long)]
    pub kills: Option<u32>,
    /// Chaos: a killed process is started again after 1 s to this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub restart_delay: f64,
    /// Chaos: seconds RabbitMQ stays stopped (rabbitmqctl stop_app .. start_app).
    #[arg(long, default_value_t = 3.0)]
    pub broker_down: f64,
    /// Chaos: seconds the shop's webhook endpoint answers 503.
    #[arg(long, default_value_t = 6.0)]
    pub shop_outage: f64,
    /// Chaos: fault kinds left out (kill, rabbitmq, postgres, shop).
    #[arg(long, value_delimiter = ',')]
    pub skip_faults: Vec<String>,
    /// Chaos: processes per service.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Chaos: PAYHUB_RETRY_DELAY_MS of the services.
    #[arg(long, default_value_t = 2000)]
    pub retry_delay_ms: u64,
    /// Chaos: PAYHUB_MAX_ATTEMPTS of the services (attempts × delay must
    /// outlast the shop outage, or its webhooks are given up on).
    #[arg(long, default_value_t = 6)]
    pub max_attempts: u32,
    /// Chaos: seconds a shop keeps retrying a submission that failed.
    #[arg(long, default_value_t = 120.0)]
    pub submit_retry: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    payhub_telemetry::install_crypto();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("payhub-bench failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn say(start: Instant, what: &str) {
    println!("[{:>7.1}s] {what}", start.elapsed().as_secs_f64());
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let wall = Instant::now();
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(args.steps.iter().all(|r| *r > 0.0), "--steps must be above 0");
    anyhow::ensure!(!args.doors.is_empty(), "--doors needs http, amqp or both");
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("formatting the time")?;
    let run_id = format!(
        "{}_{}",
        stamp.to_lowercase(),
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    );
    let out_dir = args.out.join(&stamp);
    let log_dir = out_dir.join("logs");
    if !args.ceiling_only {
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the bench binary has a directory")?
        .to_path_buf();
    say(
        wall,
        &if args.ceiling_only {
            format!("payhub-bench run {run_id}, ceilings only (no files)")
        } else {
            format!("payhub-bench run {run_id}, results in {}", out_dir.display())
        },
    );

    let env = report::environment(&args.pg_url).await?;
    say(
        wall,
        &format!(
            "PostgreSQL {}: fsync={} synchronous_commit={}; RabbitMQ {}; {} CPUs, {:.2} busy before the run",
            env.pg_version_short,
            env.pg_fsync,
            env.pg_synchronous_commit,
            env.rabbitmq_version,
            env.cpus,
            env.busy_cores_at_start
        ),
    );
    if env.busy_cores_at_start > 0.3 {
        eprintln!(
            "warning: the machine is busy ({:.2} cores) before the bench starts; the figures will be understated",
            env.busy_cores_at_start
        );
    }
    if env.pg_fsync != "on" || env.pg_synchronous_commit != "on" {
        eprintln!("warning: PostgreSQL commits are not durable here; the figures flatter payhub");
    }

    let settings = cluster::Settings {
        pg_server_url: args.pg_url.clone(),
        amqp_url: args.amqp_url.clone(),
        db_max_connections: args.db_max_connections,
        bin_dir: bin_dir.clone(),
        log_dir: log_dir.clone(),
        run_id: run_id.clone(),
        replicas: if args.chaos { args.replicas } else { 1 },
        extra_env: if args.chaos {
            chaos::service_env(&args)
        } else {
            Vec::new()
        },
    };
    let mut cl = cluster::Cluster::prepare(&settings).await?;
    say(wall, &format!("database {} migrated (payhubctl migrate)", cl.db_name));

    if args.ceiling_only {
        let outcome = ceilings(&args, &cl, wall).await;
        for p in cl.cleanup().await {
            eprintln!("  cleanup: {p}");
        }
        outcome?;
        return Ok(true);
    }
    // Ctrl-C still stops the processes and cleans up.
    if args.chaos {
        let outcome = tokio::select! {
            o = chaos::run(&args, &settings, &mut cl, wall, &stamp) => o,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        chaos::undo_broker_stop();
        let stop_problems = finish(&args, &mut cl, wall).await;
        let mut result = outcome?;
        result.wall_seconds = wall.elapsed().as_secs_f64();
        result.shutdown_problems = stop_problems;
        result.log_findings = report::scan_logs(&log_dir);
        chaos::write(&out_dir, &result)?;
        println!();
        println!("{}", chaos::markdown(&result));
        say(wall, &format!("wrote {}", out_dir.display()));
        return Ok(result.passed);
    }
    let outcome = tokio::select! {
        o = measure(&args, &settings, &mut cl, &env, wall, &out_dir, &stamp) => o,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let stop_problems = finish(&args, &mut cl, wall).await;
    let mut result = outcome?;
    result.wall_seconds = wall.elapsed().as_secs_f64();
    result.shutdown_problems = stop_problems;
    result.log_findings = report::scan_logs(&out_dir.join("logs"));
    report::write(&out_dir, &result)?;
    println!();
    println!("{}", report::markdown(&result));
    say(wall, &format!("wrote {}", out_dir.display()));
    Ok(result.verification.passed)
}

/// SIGTERM to every process, then the clean-up (or not, with --keep).
/// Returns the processes that did not stop cleanly.
async fn finish(args: &Args, cl: &mut cluster::Cluster, wall: Instant) -> Vec<String> {
    let stop_problems = cl.stop().await;
    for p in &stop_problems {
        eprintln!("  {p}");
    }
    if args.keep {
        say(
            wall,
            &format!(
                "kept database {} and queues with prefix {}",
                cl.db_name, cl.topology.prefix
            ),
        );
    } else {
        for p in cl.cleanup().await {
            eprintln!("  cleanup: {p}");
        }
        say(
            wall,
            "cleaned up: database dropped, queues, exchanges and broker user deleted",
        );
    }
    stop_problems
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    settings: &cluster::Settings,
    cl: &mut cluster::Cluster,
    env: &report::Environment,
    wall: Instant,
    out_dir: &std::path::Path,
    stamp: &str,
) -> anyhow::Result<report::BenchResult> {
    // 1. The ceilings, on a quiet machine, before payhub starts.
    let (relay, pg) = if args.skip_ceiling {
        (None, Vec::new())
    } else {
        let (r, p) = ceilings(args, cl, wall).await?;
        (Some(r), p)
    };

    // 2. payhub.
    let want_amqp = args.doors.contains(&Door::Amqp);
    cl.start(settings, want_amqp).await?;
    say(
        wall,
        "sandbox and six services started from target/release and ready (fresh database, exchange, queue prefix)",
    );
    let amqp = cl
        .amqp_shop
        .as_ref()
        .map(|a| (a.url.as_str(), a.user.as_str(), cl.topology.orders_exchange.as_str()));
    let doors = Arc::new(Doors::connect(&cl.ingress_url, &cl.api_key, amqp).await?);
    let mix = door_mix(args, &doors)?;

    let ticks = procstat::clock_ticks();
    let mut targets: Vec<(String, Target)> = cl.procs.iter().map(|p| (p.name.clone(), Target::Pid(p.pid))).collect();
    targets.push(("rabbitmq".into(), Target::Named("beam.smp")));
    targets.push(("postgresql".into(), Target::Named("postgres")));
    targets.push(("bench".into(), Target::Pid(std::process::id())));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = StopToken::new();
    let sampler = tokio::spawn(load::sample(
        args.amqp_url.clone(),
        cl.queues(),
        targets.clone(),
        ticks,
        stop.clone(),
        samples.clone(),
    ));
    let payer = Arc::new(Payer::new(cl.store.pool.clone(), &cl.sandbox_url)?);
    let payer_task = tokio::spawn(payer.clone().run(stop.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let pg_before = report::pg_counters(&cl.store.pool, &cl.db_name).await.ok();
    let metrics_start = report::scrape(&http, &cl.service_urls).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 3. The sustained phase.
    let mut offered: Vec<Offered> = Vec::new();
    let count = args
        .orders
        .unwrap_or_else(|| (args.rate * args.duration).round().max(1.0) as u64);
    say(
        wall,
        &format!(
            "sustained: {count} orders at {} orders/s through {}",
            args.rate,
            mix.iter().map(|d| d.name()).collect::<Vec<_>>().join("+")
        ),
    );
    let run_id = &settings.run_id;
    offered.push(load::offer(&doors, &mix, 0, "sustained", args.rate, count, run_id).await);
    let drained = drain(&doors, &payer, cl, &http, &samples, args.drain_timeout).await;
    say(
        wall,
        &format!(
            "sustained phase done{}",
            if drained {
                ", every order at the shop"
            } else {
                "; NOT drained within the timeout"
            }
        ),
    );
    let pg_after_sustained = report::pg_counters(&cl.store.pool, &cl.db_name).await.ok();
    let metrics_sustained = report::scrape(&http, &cl.service_urls).await;

    // 4. The knee: rising steps until one cannot keep up.
    let mut knee_live: Vec<(f64, String)> = Vec::new();
    for (i, rate) in args.steps.iter().enumerate() {
        let n = (rate * args.step_seconds).round().max(1.0) as u64;
        let label = format!("step {rate}/s");
        say(wall, &format!("knee: {label} for {} s ({n} orders)", args.step_seconds));
        let off = load::offer(&doors, &mix, i + 1, &label, *rate, n, run_id).await;
        tokio::time::sleep(Duration::from_secs_f64(args.grace)).await;
        let verdict = live_verdict(&off, &doors, cl, &http, &samples, args).await;
        say(wall, &format!("knee: {label}: {verdict}"));
        knee_live.push((*rate, verdict.clone()));
        offered.push(off);
        if !verdict.starts_with("keeps up") {
            break;
        }
    }
    let drained_knee = if args.steps.is_empty() {
        true
    } else {
        let d = drain(&doors, &payer, cl, &http, &samples, args.drain_timeout).await;
        say(
            wall,
            if d {
                "knee steps drained: every order at the shop"
            } else {
                "knee steps NOT drained within the timeout"
            },
        );
        d
    };

    // 5. Stop the load side, read everything back.
    stop.cancel();
    let _ = payer_task.await;
    let _ = sampler.await;
    let final_procs = procstat::snapshot(&targets, ticks);
    let metrics = report::scrape(&http, &cl.service_urls).await;
    let queues_at_end = report::queues_at_end(&cluster::vhost_of(&args.amqp_url), &cl.topology.prefix);
    let pg_end = report::pg_counters(&cl.store.pool, &cl.db_name).await.ok();
    let rb = analysis::read_back(&cl.store.pool, &cl.sandbox_url, &http).await?;
    let subs = doors.submissions.lock().map(|v| v.clone()).unwrap_or_default();
    let pays = payer.payments.lock().map(|v| v.clone()).unwrap_or_default();
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    let recs = analysis::records(&subs, &pays, &rb);
    let verification = analysis::verify(&recs, &rb);
    say(
        wall,
        &format!(
            "verification: {} orders, {}",
            verification.submitted,
            if verification.passed {
                "all paid once and notified once, signatures valid"
            } else {
                "FAILED"
            }
        ),
    );
    let mut notified: Vec<f64> = recs.iter().filter_map(|r| r.notified_at).collect();
    notified.sort_by(f64::total_cmp);
    let phases: Vec<analysis::PhaseResult> = offered
        .iter()
        .map(|o| {
            analysis::phase_result(
                o,
                &recs,
                &notified,
                &samples,
                args.grace,
                args.knee_threshold,
                env.cpus as f64,
            )
        })
        .collect();
    let t0 = offered.first().map(|o| o.start).unwrap_or_else(now_unix) - 2.0;
    let t1 = recs
        .iter()
        .filter_map(|r| r.notified_at)
        .fold(offered.last().map(|o| o.end).unwrap_or(t0), f64::max)
        + 2.0;
    let timeline = analysis::timeline(&recs, &samples, t0, t1, env.cpus as f64);

    analysis::write_jsonl(&out_dir.join("orders.jsonl"), &recs)?;

    let service_names: HashSet<&str> = cluster::SERVICES.iter().copied().collect();
    let resources = report::resources(&phases, &samples, &final_procs, &service_names);
    Ok(report::BenchResult {
        timestamp: stamp.to_string(),
        run_id: settings.run_id.clone(),
        args: args.clone().into(),
        environment: env.clone(),
        doors: mix.iter().map(|d| d.name().to_string()).collect(),
        amqp_unavailable: cl.amqp_unavailable.clone(),
        relay,
        pg,
        phases,
        knee_live,
        drained: drained && drained_knee,
        verification,
        resources,
        pg_counters: report::pg_deltas(pg_before, pg_after_sustained, pg_end),
        handling: report::handling(&metrics_start, &metrics_sustained, &metrics, &cl.topology.prefix),
        metrics,
        max_in_flight_submissions: doors.max_in_flight.load(Ordering::SeqCst),
        timeline,
        t0,
        wall_seconds: 0.0,
        shutdown_problems: Vec::new(),
        log_findings: Vec::new(),
        queues_at_end,
        delivery_status: rb.delivery_status.clone(),
        services: cl.service_urls.iter().map(|(n, _)| n.clone()).collect(),
    })
}

/// The doors asked for that can be used, each once, in the order given.
fn door_mix(args: &Args, doors: &Doors) -> anyhow::Result<Vec<Door>> {
    let mut mix: Vec<Door> = Vec::new();
    for d in &args.doors {
        if (*d == Door::Http || doors.has_amqp()) && !mix.contains(d) {
            mix.push(*d);
        }
    }
    anyhow::ensure!(!mix.is_empty(), "no door is usable");
    Ok(mix)
}

/// Work queues' summed depth in the latest sample.
fn latest_depth(samples: &Arc<Mutex<Vec<Sample>>>) -> Option<u64> {
    samples.lock().ok()?.last().map(analysis::work_depth)
}

/// Correlation ids whose shop got a verified `paid` webhook, and when.
async fn notified_cids(http: &reqwest::Client, sandbox_url: &str) -> Option<BTreeMap<String, f64>> {
    let v: serde_json::Value = http
        .get(format!("{sandbox_url}/sandbox/shop/webhooks"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for h in analysis::parse_hooks(&v) {
        if h.verified
            && h.typ == "order.status_changed"
            && h.status.as_deref() == Some("paid")
            && let Some(c) = h.cid
        {
            let e = out.entry(c).or_insert(h.received_at);
            *e = e.min(h.received_at);
        }
    }
    Some(out)
}

/// Waits until every accepted submission has reached the shop (or the timeout).
async fn drain(
    doors: &Arc<Doors>,
    payer: &Arc<Payer>,
    cl: &cluster::Cluster,
    http: &reqwest::Client,
    samples: &Arc<Mutex<Vec<Sample>>>,
    timeout: f64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let subs_done = doors.in_flight.load(Ordering::SeqCst) == 0;
        let expected: HashSet<String> = doors
            .submissions
            .lock()
            .map(|v| v.iter().filter(|s| s.ok).map(|s| s.cid.clone()).collect())
            .unwrap_or_default();
        let paid: Option<(i64,)> = sqlx::query_as("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .fetch_one(&cl.store.pool)
            .await
            .ok();
        let paid = paid.map(|p| p.0 as usize).unwrap_or(0);
        let quiet = latest_depth(samples) == Some(0) && payer.in_flight.load(Ordering::SeqCst) == 0;
        if subs_done
            && quiet
            && paid >= expected.len()
            && let Some(n) = notified_cids(http, &cl.sandbox_url).await
            && expected.iter().all(|c| n.contains_key(c))
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// Whether a knee step kept up, decided at its end + grace from what the shop
/// received and how the work queues moved (the report recomputes the same
/// figures from the final read-back).
async fn live_verdict(
    off: &Offered,
    doors: &Arc<Doors>,
    cl: &cluster::Cluster,
    http: &reqwest::Client,
    samples: &Arc<Mutex<Vec<Sample>>>,
    args: &Args,
) -> String {
    let seconds = off.count as f64 / off.rate;
    let end = off.start + seconds;
    let subs: Vec<(String, f64)> = doors
        .submissions
        .lock()
        .map(|v| {
            v.iter()
                .filter(|s| s.phase == off.phase)
                .map(|s| (s.cid.clone(), s.sent))
                .collect()
        })
        .unwrap_or_default();
    let sent_rate = subs.iter().filter(|s| s.1 <= end + 0.5).count() as f64 / seconds;
    let notified = notified_cids(http, &cl.sandbox_url).await.unwrap_or_default();
    let completed = subs
        .iter()
        .filter(|(c, _)| notified.get(c).is_some_and(|t| *t <= end + args.grace))
        .count();
    let ratio = completed as f64 / off.count.max(1) as f64;
    let from = analysis::steady_from(off.start, seconds);
    let steady = notified.values().filter(|t| **t >= from && **t < end).count() as f64 / (end - from).max(1e-9);
    let pts: Vec<(f64, f64)> = samples
        .lock()
        .map(|v| {
            v.iter()
                .filter(|s| s.t >= off.start && s.t <= end + 0.5)
                .map(|s| (s.t - off.start, analysis::work_depth(s) as f64))
                .collect()
        })
        .unwrap_or_default();
    let slope = stats::slope(&pts);
    let depth_end = pts.last().map(|p| p.1).unwrap_or(0.0);
    let (_, verdict) = analysis::judge(
        off.rate,
        sent_rate,
        steady,
        ratio,
        slope,
        depth_end as u64,
        args.knee_threshold,
    );
    format!(
        "{verdict}: sent {sent_rate:.0}/s, shop notified {steady:.1}/s while it ran, {:.0}% of its orders at the shop within {} s of its end, work-queue depth {depth_end:.0} (slope {slope:+.1}/s)",
        ratio * 100.0,
        args.grace
    )
}

async fn ceilings(
    args: &Args,
    cl: &cluster::Cluster,
    wall: Instant,
) -> anyhow::Result<(ceiling::RelayResult, Vec<ceiling::PgResult>)> {
    say(wall, "ceiling: RabbitMQ relay through 5 quorum queues...");
    let relay = ceiling::relay(
        &args.amqp_url,
        &cl.topology.prefix,
        5,
        32,
        args.relay_in_flight,
        Duration::from_secs(2),
        Duration::from_secs_f64(args.relay_seconds),
    )
    .await
    .context("the RabbitMQ relay ceiling")?;
    say(
        wall,
        &format!(
            "ceiling: relay {:.0} messages/s end to end ({:.0} queue writes/s, latency p50 {:.1} ms), {} errors",
            relay.messages_per_s, relay.enqueues_per_s, relay.latency_ms.p50, relay.errors
        ),
    );
    // One session (each commit waits for its own WAL flush) and many (group
    // commit shares flushes): both are "the" commit rate, for different loads.
    let mut pg = Vec::new();
    for connections in [1, args.pg_connections] {
        let r = ceiling::pg_commits(
            &cl.database_url,
            connections,
            Duration::from_secs(1),
            Duration::from_secs_f64(args.pg_seconds),
        )
        .await
        .context("the PostgreSQL commit ceiling")?;
        say(
            wall,
            &format!(
                "ceiling: PostgreSQL {:.0} single-row commits/s over {} connection(s) (p50 {:.1} ms, p99 {:.1} ms)",
                r.commits_per_s, r.connections, r.commit_latency_ms.p50, r.commit_latency_ms.p99
            ),
        );
        pg.push(r);
    }
    Ok((relay, pg))
}
