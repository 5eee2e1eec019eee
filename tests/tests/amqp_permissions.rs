//! Least privilege in RabbitMQ (issue 9 §6): on a vhost of the test's own,
//! each service connects as a RabbitMQ user of its own holding exactly the
//! permissions `payhubctl broker permissions` prints (derived from the
//! topology in `payhub_queue::permissions`); the whole pipeline runs under
//! them, and they refuse what no service needs. Needs rabbitmqctl.

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use payhub_queue::permissions::USERS;
use payhub_queue::{Broker, QueueSpec, Topology};
use payhub_sandbox::ShopFault;
use payhub_tests::{SERVICES, TestApp, TestOptions, amqp_url, eventually, sample_order};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn rabbitmqctl(args: &[&str]) -> Output {
    Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (it comes with rabbitmq-server)")
}

fn rabbitmqctl_ok(args: &[&str]) -> String {
    let out = rabbitmqctl(args);
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs several rabbitmqctl commands side by side (each takes a second to start).
fn rabbitmqctl_all(commands: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<_> = commands
        .iter()
        .map(|args| {
            Command::new("rabbitmqctl")
                .arg("-q")
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("rabbitmqctl runs")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("rabbitmqctl finishes"))
        .collect()
}

/// A vhost and one user per payhub user ([`USERS`]), made for one test and
/// deleted when dropped, also when the test fails (deleting the vhost
/// deletes every queue in it: the broker's file handles are few).
struct Rabbit {
    vhost: String,
    user_prefix: String,
    /// `(payhub user, password)`.
    passwords: Vec<(&'static str, String)>,
    /// The broker's address and the harness's own (administrator) user.
    host: String,
    admin: (String, String),
}

impl Rabbit {
    fn new() -> Rabbit {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("PAYHUB_TEST_AMQP_URL is an AMQP URL");
        let rabbit = Rabbit {
            vhost: format!("payhub-perms-{id}"),
            user_prefix: format!("payhub-perms-{id}-"),
            passwords: USERS
                .iter()
                .map(|u| (*u, uuid::Uuid::new_v4().simple().to_string()))
                .collect(),
            host: format!("{}:{}", uri.authority.host, uri.authority.port),
            admin: (uri.authority.userinfo.username, uri.authority.userinfo.password),
        };
        rabbitmqctl_ok(&["add_vhost", &rabbit.vhost]);
        // The harness's user sets up and inspects; the services never use it.
        rabbitmqctl_ok(&[
            "set_permissions",
            "-p",
            &rabbit.vhost,
            &rabbit.admin.0,
            ".*",
            ".*",
            ".*",
        ]);
        rabbit
    }

    fn user(&self, name: &str) -> String {
        format!("{}{name}", self.user_prefix)
    }

    fn url(&self, name: &str) -> String {
        let (_, password) = self.passwords.iter().find(|(u, _)| *u == name).expect("a payhub user");
        format!("amqp://{}:{password}@{}/{}", self.user(name), self.host, self.vhost)
    }

    fn admin_url(&self) -> String {
        format!("amqp://{}:{}@{}/{}", self.admin.0, self.admin.1, self.host, self.vhost)
    }

    /// The operator's way: import the definitions payhubctl prints, then
    /// give each user its password.
    fn apply(&self, app: &TestApp) {
        let out = app.payhubctl(&[
            "broker",
            "permissions",
            "--vhost",
            &self.vhost,
            "--user-prefix",
            &self.user_prefix,
            "--format",
            "definitions",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let file = std::env::temp_dir().join(format!("{}.json", self.vhost));
        std::fs::write(&file, &out.stdout).expect("write the definitions");
        let imported = rabbitmqctl(&["import_definitions", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        assert!(
            imported.status.success(),
            "import_definitions: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
        let commands: Vec<Vec<String>> = self
            .passwords
            .iter()
            .map(|(u, p)| vec!["change_password".into(), self.user(u), p.clone()])
            .collect();
        for out in rabbitmqctl_all(&commands) {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// `(user, configure, write, read)` as the broker holds them, for our users.
    fn granted(&self) -> Vec<(String, String, String, String)> {
        let listed: Value = serde_json::from_str(&rabbitmqctl_ok(&[
            "list_permissions",
            "-p",
            &self.vhost,
            "--formatter",
            "json",
        ]))
        .expect("JSON permissions");
        let mut out: Vec<_> = listed
            .as_array()
            .expect("a list")
            .iter()
            .filter(|p| p["user"].as_str().is_some_and(|u| u.starts_with(&self.user_prefix)))
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("user"), s("configure"), s("write"), s("read"))
            })
            .collect();
        out.sort();
        out
    }

    /// The users with a connection open on the vhost (list_connections
    /// lists every vhost's, whatever `-p` says).
    fn connected_users(&self) -> Vec<String> {
        let listed: Value = serde_json::from_str(&rabbitmqctl_ok(&[
            "list_connections",
            "user",
            "vhost",
            "--formatter",
            "json",
        ]))
        .expect("JSON connections");
        listed
            .as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["vhost"] == self.vhost.as_str())
            .filter_map(|c| c["user"].as_str().map(str::to_string))
            .collect()
    }

    /// Deletes every queue and exchange of `topology` on the vhost.
    async fn clear(&self, topology: &Topology) {
        let conn = Connection::connect(&self.admin_url(), ConnectionProperties::default())
            .await
            .expect("the admin connects");
        let ch = conn.create_channel().await.unwrap();
        for spec in QueueSpec::ALL {
            for q in [
                topology.work_queue(&spec),
                topology.retry_queue(&spec),
                topology.dead_letter_queue(&spec),
            ] {
                ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
            }
        }
        for exchange in [&topology.exchange, &topology.orders_exchange] {
            ch.exchange_delete(exchange.as_str().into(), Default::default())
                .await
                .unwrap();
        }
        let _ = conn.close(200, "cleared".into()).await;
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let mut commands = vec![vec!["delete_vhost".to_string(), self.vhost.clone()]];
        commands.extend(
            self.passwords
                .iter()
                .map(|(u, _)| vec!["delete_user".to_string(), self.user(u)]),
        );
        let _ = rabbitmqctl_all(&commands);
    }
}

/// Connects as `url` and runs `op` on a fresh channel: it must be refused
/// with ACCESS_REFUSED.
async fn refused<F, Fut, T>(what: &str, url: &str, op: F)
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, lapin::Error>>,
    T: std::fmt::Debug,
{
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot connect: {e}"));
    let ch = conn.create_channel().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), op(ch)).await;
    match &got {
        Ok(Err(e)) if format!("{e:?}").contains("ACCESS_REFUSED") => {}
        _ => panic!("{what}: expected ACCESS_REFUSED, got {got:?}"),
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Publishes one message and waits for the confirm.
async fn publish(ch: lapin::Channel, exchange: String, routing_key: String) -> Result<(), lapin::Error> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        exchange.as_str().into(),
        routing_key.as_str().into(),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default(),
    )
    .await?
    .await?;
    // A refused publish closes the channel; the next call reports why.
    ch.basic_qos(1, Default::default()).await
}

async fn wait_ready(app: &TestApp) {
    for (name, base) in &app.ops_urls {
        let ok = eventually(Duration::from_secs(20), || async {
            matches!(app.http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
        })
        .await;
        assert!(ok, "{name} never became ready under its own RabbitMQ user");
    }
}

fn payhubctl_as(app: &TestApp, rabbit: &Rabbit, args: &[&str]) -> Output {
    let out = app.payhubctl_with_env(args, &[("PAYHUB_AMQP_URL", &rabbit.url("payhubctl"))]);
    assert!(
        out.status.success(),
        "payhubctl {args:?} as its own RabbitMQ user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dead_letters(app: &TestApp, rabbit: &Rabbit) -> Vec<Value> {
    let out = payhubctl_as(app, rabbit, &["dlq", "list", "--queue", "notifier.status", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON dead letters");
    listed[0]["deadLetters"].as_array().cloned().unwrap_or_default()
}

/// Whether the notifier parked the unreadable message, replayed `replayed` times.
async fn parked(app: &TestApp, rabbit: &Rabbit, replayed: u64) -> bool {
    eventually(Duration::from_secs(15), || async {
        dead_letters(app, rabbit).iter().any(|l| {
            l["story"]["reason"] == "unparseable" && l["story"]["failed_by"] == "notifier" && l["replayed"] == replayed
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_runs_under_its_own_rabbitmq_user_and_permissions() {
    let rabbit = Rabbit::new();
    let mut app = TestApp::spawn_with(TestOptions {
        deferred: SERVICES.to_vec(),
        amqp_urls: SERVICES.iter().map(|s| (*s, rabbit.url(s))).collect(),
        ..TestOptions::default()
    })
    .await;
    let topology = app.topology.clone();
    let topo = &topology;

    // What payhubctl prints is what the broker now holds, and what the code derives.
    rabbit.apply(&app);
    let mut expected: Vec<_> = topo
        .permissions()
        .into_iter()
        .map(|(u, p)| (rabbit.user(u), p.configure, p.write, p.read))
        .collect();
    expected.sort();
    assert_eq!(rabbit.granted(), expected);

    // Whichever service starts first on an empty vhost creates the whole
    // topology: each one can, alone.
    for service in SERVICES {
        let stop = CancellationToken::new();
        let broker = Broker::start(&rabbit.url(service), "permissions-probe", topo.clone(), stop.clone());
        let declared = broker.wait_connected(Duration::from_secs(15)).await;
        stop.cancel();
        assert!(
            declared.is_ok(),
            "{service}'s user cannot declare the topology on an empty vhost: {declared:?}"
        );
        // Let its connections close before the next user starts afresh.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rabbit.clear(topo).await;
    }

    // The six services, each under its own user.
    for service in SERVICES {
        app.start_service(service).await.expect("the service starts");
    }
    wait_ready(&app).await;
    let connected = rabbit.connected_users();
    for service in SERVICES {
        assert!(
            connected.contains(&rabbit.user(service)),
            "{service} is connected as its user: {connected:?}"
        );
    }
    assert!(!connected.contains(&rabbit.admin.0), "no service uses the admin user");

    // One order from submission to paid; the shop fails the first webhook
    // once, so the notifier retries it through the retry queue.
    app.sandbox.shop_fail_next(1, ShopFault::Status(500));
    app.post_order(&sample_order("pedido-amqp-users")).await;
    let order = app.wait_for_status("pedido-amqp-users", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status("pedido-amqp-users", "paid").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let answered = |status: &str| {
                app.shop_hooks_for("pedido-amqp-users", status)
                    .iter()
                    .filter_map(|h| h.answered)
                    .collect::<Vec<u16>>()
            };
            // The failed one (whichever came first) was retried.
            let (awaiting, paid) = (answered("awaiting_payment"), answered("paid"));
            awaiting.contains(&200)
                && paid.contains(&200)
                && awaiting.iter().chain(&paid).filter(|a| **a == 500).count() == 1
        })
        .await,
        "the shop's webhooks are delivered, the first after a retry: {:?}",
        app.sandbox
            .shop_webhooks()
            .iter()
            .map(|h| (h.body.clone(), h.answered))
            .collect::<Vec<_>>()
    );

    // A message nobody can read is parked by the notifier under its user;
    // payhubctl lists, replays and purges it under its own.
    let admin = Connection::connect(&rabbit.admin_url(), ConnectionProperties::default())
        .await
        .unwrap();
    publish(
        admin.create_channel().await.unwrap(),
        String::new(),
        topo.work_queue(&QueueSpec::NOTIFIER),
    )
    .await
    .expect("the admin publishes");
    let _ = admin.close(200, "done".into()).await;
    assert!(
        parked(&app, &rabbit, 0).await,
        "parked by the notifier: {:#?}",
        dead_letters(&app, &rabbit)
    );
    let replay = payhubctl_as(&app, &rabbit, &["dlq", "replay", "notifier.status", "--all"]);
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout).trim(),
        "replayed 1 dead letter(s) into notifier.status"
    );
    assert!(
        parked(&app, &rabbit, 1).await,
        "replayed and parked again: {:#?}",
        dead_letters(&app, &rabbit)
    );
    let purge = payhubctl_as(&app, &rabbit, &["dlq", "purge", "notifier.status", "--yes"]);
    assert_eq!(
        String::from_utf8_lossy(&purge.stdout).trim(),
        "purged 1 dead letter(s) from notifier.status"
    );

    // What the permissions refuse. No service reads a parking lot, publishes
    // as a shop, declares outside the topology (another installation's
    // unprefixed queues included) or binds a parking lot to the events.
    let q = |spec: &QueueSpec| topo.work_queue(spec);
    let dlq = |spec: &QueueSpec| topo.dead_letter_queue(spec);
    for service in SERVICES {
        let url = rabbit.url(service);
        refused(&format!("{service} consuming a parking lot"), &url, |ch| async move {
            ch.basic_consume(
                dlq(&QueueSpec::CHARGE_CREATOR).as_str().into(),
                "thief".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        })
        .await;
        refused(&format!("{service} publishing to the shops' exchange"), &url, |ch| {
            publish(ch, topo.orders_exchange.clone(), "orders.forged".into())
        })
        .await;
        for foreign in [
            format!("{}unrelated", topo.prefix),
            QueueSpec::CHARGE_CREATOR.base.to_string(),
        ] {
            refused(&format!("{service} declaring {foreign}"), &url, |ch| async move {
                ch.queue_declare(
                    foreign.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
            })
            .await;
        }
    }
    refused(
        "binding a parking lot to the events",
        &rabbit.url("ingress"),
        |ch| async move {
            ch.queue_bind(
                dlq(&QueueSpec::CHARGE_CREATOR).as_str().into(),
                topo.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        },
    )
    .await;
    // payhubctl's user touches the parking lots only: it consumes no work
    // queue, declares nothing and publishes no event.
    let ctl = rabbit.url("payhubctl");
    refused("payhubctl consuming a work queue", &ctl, |ch| async move {
        ch.basic_consume(
            q(&QueueSpec::CHARGE_CREATOR).as_str().into(),
            "thief".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    refused("payhubctl declaring a parking lot", &ctl, |ch| async move {
        ch.queue_declare(
            dlq(&QueueSpec::NOTIFIER).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            topo.dead_letter_args(),
        )
        .await
    })
    .await;
    refused("payhubctl publishing an event", &ctl, |ch| {
        publish(ch, topo.exchange.clone(), "order.accepted".into())
    })
    .await;

    app.stop().await;
    drop(rabbit);
}
