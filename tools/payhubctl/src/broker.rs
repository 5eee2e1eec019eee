//! `payhubctl broker permissions`: the RabbitMQ users payhub connects as and
//! the permissions each needs, as `payhub_queue::permissions` derives them
//! from the declared topology, so operators grant exactly what the code
//! uses. Never prints a secret: the rabbitmqctl form takes each password
//! from an environment variable, the definitions form has no password at all.

use payhub_queue::Topology;
use serde_json::{Value, json};

/// How `broker permissions` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PermissionsFormat {
    /// `rabbitmqctl add_user` / `set_permissions` commands, ready for a shell.
    Rabbitmqctl,
    /// A RabbitMQ definitions fragment (`rabbitmqctl import_definitions`).
    Definitions,
}

/// The RabbitMQ user of a payhub user: `<user_prefix><name>`.
fn user_name(user_prefix: &str, name: &str) -> String {
    format!("{user_prefix}{name}")
}

/// The variable the rabbitmqctl form reads `name`'s password from, e.g.
/// `PAYHUB_AMQP_PASSWORD_CHARGE_CREATOR`.
pub fn password_variable(name: &str) -> String {
    let tail: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PAYHUB_AMQP_PASSWORD_{tail}")
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The commands that create every user and set its permissions on `vhost`.
/// `add_user` takes the password from a variable and fails when it is unset
/// (`${VAR:?}`), so nothing real is ever printed and nothing empty is set.
pub fn rabbitmqctl(topology: &Topology, vhost: &str, user_prefix: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# payhub's RabbitMQ users on vhost {vhost:?} (exchanges {:?} and {:?}, queue prefix {:?}),\n\
         # from `payhubctl broker permissions`: exactly what the code declares, publishes and consumes.\n\
         # Set each PAYHUB_AMQP_PASSWORD_* first; leave out add_user for users that exist.\n",
        topology.exchange, topology.orders_exchange, topology.prefix
    ));
    for (name, p) in topology.permissions() {
        let user = shell_quote(&user_name(user_prefix, name));
        out.push_str(&format!(
            "rabbitmqctl add_user {user} \"${{{}:?}}\"\n",
            password_variable(name)
        ));
        out.push_str(&format!(
            "rabbitmqctl set_permissions -p {} {user} {} {} {}\n",
            shell_quote(vhost),
            shell_quote(&p.configure),
            shell_quote(&p.write),
            shell_quote(&p.read)
        ));
    }
    out
}

/// A definitions fragment with the users (no password hash: they cannot log
/// in until `rabbitmqctl change_password` gives them one), the vhost and the
/// permissions. Importing it again over existing users clears their
/// passwords; for those import only `permissions`.
pub fn definitions(topology: &Topology, vhost: &str, user_prefix: &str) -> Value {
    let grants = topology.permissions();
    let users: Vec<Value> = grants
        .iter()
        .map(|(name, _)| json!({"name": user_name(user_prefix, name), "tags": []}))
        .collect();
    let permissions: Vec<Value> = grants
        .iter()
        .map(|(name, p)| {
            json!({
                "user": user_name(user_prefix, name),
                "vhost": vhost,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            })
        })
        .collect();
    json!({"users": users, "vhosts": [{"name": vhost}], "permissions": permissions})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmqctl_form_has_one_user_and_one_grant_per_payhub_user() {
        let topo = Topology::default();
        let text = rabbitmqctl(&topo, "/", "payhub-");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2 * payhub_queue::permissions::USERS.len());
        assert_eq!(
            lines[0],
            "rabbitmqctl add_user 'payhub-ingress' \"${PAYHUB_AMQP_PASSWORD_INGRESS:?}\""
        );
        let p = topo.permissions_of("ingress").unwrap();
        assert_eq!(
            lines[1],
            format!(
                "rabbitmqctl set_permissions -p '/' 'payhub-ingress' '{}' '{}' '{}'",
                p.configure, p.write, p.read
            )
        );
        assert!(text.contains("'payhub-payhubctl' '^$' '^amq\\.default$' "));
        assert_eq!(
            password_variable("charge-creator"),
            "PAYHUB_AMQP_PASSWORD_CHARGE_CREATOR"
        );
    }

    #[test]
    fn quoting_survives_odd_names() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let text = rabbitmqctl(&Topology::default(), "o'vhost", "x-");
        assert!(text.contains("set_permissions -p 'o'\\''vhost' 'x-notifier' "));
    }

    /// deploy/README.md's table is this command's output for the default
    /// topology; it must not drift from the code.
    #[test]
    fn the_deploy_readme_shows_what_the_code_grants() {
        let readme = include_str!("../../../deploy/README.md");
        let cell = |regex: &str| format!("`{}`", regex.replace('|', "\\|"));
        let topo = Topology::default();
        for (user, p) in topo.permissions() {
            let row = if user == "payhubctl" {
                "| payhubctl (`dlq`) |"
            } else {
                "| each service |"
            };
            let expected = format!(
                "{row} {} | {} | {} |",
                cell(&p.configure),
                cell(&p.write),
                cell(&p.read)
            );
            assert!(
                readme.lines().any(|l| l == expected),
                "deploy/README.md lacks {user}'s row:\n{expected}"
            );
        }
    }

    #[test]
    fn definitions_carry_no_password_and_the_same_regexes() {
        let topo = Topology {
            prefix: "t1.".into(),
            ..Topology::default()
        };
        let d = definitions(&topo, "payhub", "p-");
        let users = d["users"].as_array().unwrap();
        assert_eq!(users.len(), payhub_queue::permissions::USERS.len());
        for u in users {
            let keys: Vec<&String> = u.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["name", "tags"], "no password or hash");
        }
        assert_eq!(d["vhosts"], json!([{"name": "payhub"}]));
        let notifier = &d["permissions"][4];
        let p = topo.permissions_of("notifier").unwrap();
        assert_eq!(notifier["user"], "p-notifier");
        assert_eq!(notifier["vhost"], "payhub");
        assert_eq!(notifier["configure"], p.configure);
        assert_eq!(notifier["write"], p.write);
        assert_eq!(notifier["read"], p.read);
    }
}
