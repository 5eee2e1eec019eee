//! The RabbitMQ permissions each payhub user needs, derived from what the
//! code declares ([`QueueSpec::ALL`], the queue arguments of [`Topology`])
//! so that what operators grant cannot drift from what the services do.
//! `payhubctl broker permissions` prints them; `tests/tests/amqp_permissions.rs`
//! runs the whole pipeline under them and checks what they refuse.
//!
//! What RabbitMQ checks, per operation payhub performs:
//! * `exchange.declare`, `queue.declare` (not passive): configure on the
//!   name, every time, also when it exists already. Passive declares (the
//!   depth sampler, `payhubctl dlq list`) need nothing.
//! * `queue.declare` that *creates* a queue with an `x-dead-letter-exchange`:
//!   also read on the queue and write on that exchange (the default
//!   exchange, `""`, is checked as `amq.default`). Every service declares the
//!   whole topology at connect (see `Broker`), and whichever starts first on
//!   an empty vhost creates every queue, so every service needs read on every
//!   queue that dead-letters (work and retry queues), not only its own.
//! * `queue.bind`, `queue.unbind`: write on the queue, read on the exchange.
//! * `basic.publish`: write on the exchange (events on the events exchange;
//!   retries, parking and replays through the default exchange).
//! * `basic.consume`, `basic.get`, `queue.purge`: read on the queue.

use crate::topology::{QueueSpec, Topology};
use lapin::types::{AMQPValue, FieldTable};

/// The name RabbitMQ checks permissions of the default exchange (`""`) under.
pub const DEFAULT_EXCHANGE: &str = "amq.default";

/// Who connects to the broker: the six services, each as its own user, and
/// payhubctl's `dlq` commands.
pub const USERS: [&str; 7] = [
    "ingress",
    "charge-creator",
    "webhook-verifier",
    "order-updater",
    "notifier",
    "reporter",
    "payhubctl",
];

/// The queue each service consumes (webhook-verifier consumes none).
const CONSUMES: [(&str, Option<QueueSpec>); 6] = [
    ("ingress", Some(QueueSpec::INGRESS_ORDERS)),
    ("charge-creator", Some(QueueSpec::CHARGE_CREATOR)),
    ("webhook-verifier", None),
    ("order-updater", Some(QueueSpec::ORDER_UPDATER)),
    ("notifier", Some(QueueSpec::NOTIFIER)),
    ("reporter", Some(QueueSpec::REPORTER)),
];

/// The three regexes of `rabbitmqctl set_permissions`, anchored, matching
/// exactly the names the user needs (`^$` for none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// Which of a spec's three queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Work,
    Retry,
    DeadLetter,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Work, Kind::Retry, Kind::DeadLetter];

    fn suffix(self) -> &'static str {
        match self {
            Kind::Work => "",
            Kind::Retry => ".retry",
            Kind::DeadLetter => ".dlq",
        }
    }

    #[cfg(test)]
    fn name(self, topo: &Topology, spec: &QueueSpec) -> String {
        match self {
            Kind::Work => topo.work_queue(spec),
            Kind::Retry => topo.retry_queue(spec),
            Kind::DeadLetter => topo.dead_letter_queue(spec),
        }
    }

    fn args(self, topo: &Topology, spec: &QueueSpec) -> FieldTable {
        match self {
            Kind::Work => topo.work_args(spec),
            Kind::Retry => topo.retry_args(spec),
            Kind::DeadLetter => topo.dead_letter_args(),
        }
    }
}

/// The names one permission must match: exchanges by name, queues as
/// (spec base, kind) so that the regex can say "these queues, with these
/// suffixes" readably. Kept in first-seen order (queues) and sorted
/// (exchanges), so the output is stable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Needs {
    exchanges: Vec<String>,
    queues: Vec<(&'static str, Kind)>,
}

impl Needs {
    fn exchange(&mut self, name: &str) {
        let name = if name.is_empty() { DEFAULT_EXCHANGE } else { name };
        if !self.exchanges.iter().any(|e| e == name) {
            self.exchanges.push(name.to_string());
            self.exchanges.sort();
        }
    }

    fn queue(&mut self, spec: &QueueSpec, kind: Kind) {
        if !self.queues.contains(&(spec.base, kind)) {
            self.queues.push((spec.base, kind));
        }
    }

    /// Every name matched, spelled out (what the regex means).
    #[cfg(test)]
    fn names(&self, topo: &Topology) -> Vec<String> {
        let mut out = self.exchanges.clone();
        for (base, kind) in &self.queues {
            let spec = QueueSpec::ALL
                .into_iter()
                .find(|s| s.base == *base)
                .expect("a declared spec");
            out.push(kind.name(topo, &spec));
        }
        out.sort();
        out
    }

    /// `^(ex1|ex2|<prefix>(q1|q2)(\.retry|\.dlq)?)$`: queues that need the
    /// same kinds share one group.
    fn regex(&self, prefix: &str) -> String {
        let mut items: Vec<String> = self.exchanges.iter().map(|e| escape(e)).collect();
        let mut groups: Vec<(Vec<Kind>, Vec<&str>)> = Vec::new();
        let mut bases: Vec<&str> = Vec::new();
        for (base, _) in &self.queues {
            if !bases.contains(base) {
                bases.push(base);
            }
        }
        for base in bases {
            let kinds: Vec<Kind> = Kind::ALL
                .into_iter()
                .filter(|k| self.queues.contains(&(base, *k)))
                .collect();
            match groups.iter_mut().find(|(k, _)| *k == kinds) {
                Some((_, members)) => members.push(base),
                None => groups.push((kinds, vec![base])),
            }
        }
        for (kinds, members) in groups {
            let names = alternation(members.iter().map(|b| escape(b)).collect());
            let others: Vec<String> = kinds
                .iter()
                .filter(|k| **k != Kind::Work)
                .map(|k| escape(k.suffix()))
                .collect();
            let suffix = match (kinds.contains(&Kind::Work), others.is_empty()) {
                (_, true) => String::new(),
                // Optional: always in parentheses, or `?` would bind to one character.
                (true, false) => format!("({})?", others.join("|")),
                (false, false) => alternation(others),
            };
            items.push(format!("{}{names}{suffix}", escape(prefix)));
        }
        match items.len() {
            0 => "^$".to_string(),
            1 => format!("^{}$", items[0]),
            _ => format!("^({})$", items.join("|")),
        }
    }
}

/// `a`, or `(a|b)` for several.
fn alternation(items: Vec<String>) -> String {
    if items.len() == 1 {
        items.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", items.join("|"))
    }
}

/// A name as a literal in RabbitMQ's (Erlang `re`, PCRE) regexes.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `x-dead-letter-exchange` a queue is declared with, if any.
fn dead_letter_exchange(args: &FieldTable) -> Option<String> {
    match args.inner().get("x-dead-letter-exchange")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// (configure, write, read) of a service consuming `own`.
fn service_needs(topo: &Topology, own: Option<&QueueSpec>) -> [Needs; 3] {
    let (mut configure, mut write, mut read) = (Needs::default(), Needs::default(), Needs::default());
    // The publisher declares the events exchange at connect and publishes
    // every event to it; retries and parking go through the default exchange.
    configure.exchange(&topo.exchange);
    write.exchange(&topo.exchange);
    write.exchange("");
    // Then the whole topology, whatever the service consumes (see `Broker`).
    for spec in QueueSpec::ALL {
        configure.exchange(topo.source_exchange(&spec));
        for kind in Kind::ALL {
            configure.queue(&spec, kind);
            // Creating a queue that dead-letters checks read on it and write
            // on its dead-letter exchange.
            if let Some(dlx) = dead_letter_exchange(&kind.args(topo, &spec)) {
                read.queue(&spec, kind);
                write.exchange(&dlx);
            }
        }
        if !spec.bindings.is_empty() || !spec.retired_bindings.is_empty() {
            write.queue(&spec, Kind::Work);
            read.exchange(topo.source_exchange(&spec));
        }
    }
    if let Some(own) = own {
        read.queue(own, Kind::Work);
    }
    [configure, write, read]
}

/// (configure, write, read) of payhubctl's `dlq` commands: depths are
/// passive declares; list, show, replay and purge read the dead-letter
/// queues; replay publishes into the work queue through the default
/// exchange. It declares nothing.
fn dead_letter_admin_needs() -> [Needs; 3] {
    let (configure, mut write, mut read) = (Needs::default(), Needs::default(), Needs::default());
    write.exchange("");
    for spec in QueueSpec::ALL {
        read.queue(&spec, Kind::DeadLetter);
    }
    [configure, write, read]
}

fn needs(topo: &Topology, user: &str) -> Option<[Needs; 3]> {
    if user == "payhubctl" {
        return Some(dead_letter_admin_needs());
    }
    let (_, own) = CONSUMES.iter().find(|(service, _)| *service == user)?;
    Some(service_needs(topo, own.as_ref()))
}

impl Topology {
    /// The permissions `user` (one of [`USERS`]) needs on this topology's
    /// vhost; `None` for an unknown user.
    pub fn permissions_of(&self, user: &str) -> Option<Permissions> {
        let [configure, write, read] = needs(self, user)?;
        Some(Permissions {
            configure: configure.regex(&self.prefix),
            write: write.regex(&self.prefix),
            read: read.regex(&self.prefix),
        })
    }

    /// `(user, permissions)` for every one of [`USERS`], in that order.
    pub fn permissions(&self) -> Vec<(&'static str, Permissions)> {
        USERS
            .into_iter()
            .filter_map(|u| self.permissions_of(u).map(|p| (u, p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUES: &str =
        "(ingress\\.shop-orders|charge-creator\\.orders|order-updater\\.events|notifier\\.status|reporter\\.events)";

    fn needs_of(topo: &Topology, user: &str) -> [Vec<String>; 3] {
        let [c, w, r] = needs(topo, user).expect("a known user");
        [c.names(topo), w.names(topo), r.names(topo)]
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn default_topology_regexes() {
        let topo = Topology::default();
        let ingress = topo.permissions_of("ingress").unwrap();
        assert_eq!(
            ingress.configure,
            format!("^(payhub\\.events|payhub\\.orders|{QUEUES}(\\.retry|\\.dlq)?)$")
        );
        assert_eq!(ingress.write, format!("^(amq\\.default|payhub\\.events|{QUEUES})$"));
        assert_eq!(
            ingress.read,
            format!("^(payhub\\.events|payhub\\.orders|{QUEUES}(\\.retry)?)$")
        );
        let ctl = topo.permissions_of("payhubctl").unwrap();
        assert_eq!(ctl.configure, "^$");
        assert_eq!(ctl.write, "^amq\\.default$");
        assert_eq!(ctl.read, format!("^{QUEUES}\\.dlq$"));
        assert_eq!(topo.permissions_of("somebody"), None);
        let all = topo.permissions();
        assert_eq!(all.iter().map(|(u, _)| *u).collect::<Vec<_>>(), USERS.to_vec());
    }

    #[test]
    fn services_may_configure_exactly_what_the_topology_declares() {
        let topo = Topology {
            prefix: "t1.".into(),
            ..Topology::default()
        };
        let mut declared = vec![topo.exchange.clone(), topo.orders_exchange.clone()];
        for spec in QueueSpec::ALL {
            declared.extend([
                topo.work_queue(&spec),
                topo.retry_queue(&spec),
                topo.dead_letter_queue(&spec),
            ]);
        }
        let with_dlx: Vec<String> = QueueSpec::ALL
            .iter()
            .flat_map(|s| [topo.work_queue(s), topo.retry_queue(s)])
            .collect();
        for (service, own) in CONSUMES {
            let [configure, write, read] = needs_of(&topo, service);
            assert_eq!(configure, sorted(declared.clone()), "{service} configure");
            // Publishing events, the default exchange, and binding every work queue.
            let mut w = vec![topo.exchange.clone(), DEFAULT_EXCHANGE.to_string()];
            w.extend(QueueSpec::ALL.iter().map(|s| topo.work_queue(s)));
            assert_eq!(write, sorted(w), "{service} write");
            // Binding reads both exchanges; creating a dead-lettering queue
            // reads it; no service reads a parking lot.
            let mut r = vec![topo.exchange.clone(), topo.orders_exchange.clone()];
            r.extend(with_dlx.clone());
            assert_eq!(read, sorted(r), "{service} read");
            if let Some(own) = own {
                assert!(read.contains(&topo.work_queue(&own)), "{service} consumes its queue");
            }
            assert!(
                !read.iter().any(|q| q.ends_with(".dlq")),
                "{service} reads no dead letters"
            );
            assert!(
                !write.contains(&topo.orders_exchange),
                "{service} cannot publish as a shop"
            );
        }
    }

    #[test]
    fn payhubctl_reads_only_the_parking_lots() {
        let topo = Topology::default();
        let [configure, write, read] = needs_of(&topo, "payhubctl");
        assert!(configure.is_empty());
        assert_eq!(write, vec![DEFAULT_EXCHANGE.to_string()]);
        assert_eq!(
            read,
            sorted(QueueSpec::ALL.iter().map(|s| topo.dead_letter_queue(s)).collect())
        );
    }

    #[test]
    fn every_queue_has_exactly_one_consumer() {
        for spec in QueueSpec::ALL {
            let n = CONSUMES.iter().filter(|(_, own)| *own == Some(spec)).count();
            assert_eq!(n, 1, "{} is consumed by {n} services", spec.base);
        }
        let services: Vec<&str> = CONSUMES.iter().map(|(s, _)| *s).collect();
        assert_eq!(services, USERS[..6].to_vec());
    }

    #[test]
    fn prefix_and_exchange_names_are_escaped() {
        let topo = Topology {
            exchange: "ev.x+1".into(),
            orders_exchange: "or(d)ers".into(),
            prefix: "t1.$".into(),
            ..Topology::default()
        };
        let p = topo.permissions_of("notifier").unwrap();
        assert!(
            p.configure
                .starts_with("^(ev\\.x\\+1|or\\(d\\)ers|t1\\.\\$(ingress\\.shop-orders|")
        );
        let ctl = topo.permissions_of("payhubctl").unwrap();
        assert_eq!(ctl.read, format!("^t1\\.\\${QUEUES}\\.dlq$"));
        assert_eq!(escape("a.b|c"), "a\\.b\\|c");
    }

    #[test]
    fn regex_shapes() {
        let mut n = Needs::default();
        assert_eq!(n.regex("p."), "^$");
        n.exchange("");
        assert_eq!(n.regex("p."), "^amq\\.default$");
        n.queue(&QueueSpec::NOTIFIER, Kind::Work);
        assert_eq!(n.regex("p."), "^(amq\\.default|p\\.notifier\\.status)$");
        n.queue(&QueueSpec::NOTIFIER, Kind::DeadLetter);
        n.queue(&QueueSpec::REPORTER, Kind::Retry);
        // Different kinds: separate groups.
        assert_eq!(
            n.regex(""),
            "^(amq\\.default|notifier\\.status(\\.dlq)?|reporter\\.events\\.retry)$"
        );
    }
}
