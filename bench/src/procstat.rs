//! CPU time and memory of processes, read from /proc (Linux).

use serde::Serialize;
use std::collections::BTreeMap;

/// Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `(utime + stime, cutime + cstime)` of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are fixed.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14.
    let n = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok());
    Some((n(14)? + n(15)?, n(16)? + n(17)?))
}

/// `(VmRSS, VmHWM)` in kB.
pub fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Pids whose command name is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| comm(*pid).as_deref() == Some(name))
        .collect()
}

/// What is watched: one process, or every process of a name (PostgreSQL's
/// backends come and go; their time is summed with the postmaster's
/// `cutime`, where an exited backend's time lands).
#[derive(Debug, Clone)]
pub enum Target {
    Pid(u32),
    Named(&'static str),
}

/// One reading of one watched process group.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Reading {
    /// Cumulative CPU seconds (user + system).
    pub cpu_s: f64,
    /// Resident memory now, kB (summed over a named group).
    pub rss_kb: u64,
    /// Peak resident memory (VmHWM), kB: the largest single process of a group.
    pub hwm_kb: u64,
}

pub fn read(target: &Target, ticks: f64) -> Reading {
    match target {
        Target::Pid(pid) => {
            let cpu = cpu_ticks(*pid).map(|(own, _)| own).unwrap_or(0);
            let (rss, hwm) = memory_kb(*pid).unwrap_or((0, 0));
            Reading {
                cpu_s: cpu as f64 / ticks,
                rss_kb: rss,
                hwm_kb: hwm,
            }
        }
        Target::Named(name) => {
            let mut r = Reading::default();
            for pid in pids_named(name) {
                if let Some((own, children)) = cpu_ticks(pid) {
                    r.cpu_s += (own + children) as f64 / ticks;
                }
                if let Some((rss, hwm)) = memory_kb(pid) {
                    r.rss_kb += rss;
                    r.hwm_kb = r.hwm_kb.max(hwm);
                }
            }
            r
        }
    }
}

/// CPU seconds (own + reaped children) of every process the bench does not
/// watch: `(user-space processes, kernel threads)`. Kernel threads (children
/// of kthreadd, pid 2) do the disk flushing and some network work the load
/// causes; user-space processes are other work on the machine.
pub fn others(excluded_pids: &std::collections::HashSet<u32>, excluded_comms: &[&str], ticks: f64) -> (f64, f64) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0);
    };
    let (mut user, mut kernel) = (0u64, 0u64);
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if excluded_pids.contains(&pid) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let comm = &text[open + 1..close];
        if excluded_comms.contains(&comm) {
            continue;
        }
        let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let n = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let ppid = n(4);
        let t = n(14) + n(15) + n(16) + n(17);
        if pid == 2 || ppid == 2 {
            kernel += t;
        } else {
            user += t;
        }
    }
    (user as f64 / ticks, kernel as f64 / ticks)
}

/// Machine-wide CPU: `(busy ticks, total ticks)` from /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Readings of every watched group at one moment.
pub type Snapshot = BTreeMap<String, Reading>;

pub fn snapshot(targets: &[(String, Target)], ticks: f64) -> Snapshot {
    targets.iter().map(|(name, t)| (name.clone(), read(t, ticks))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        let (rss, hwm) = memory_kb(me).expect("status readable");
        assert!(rss > 0 && hwm >= rss);
        let (busy, total) = machine_ticks();
        assert!(total >= busy && total > 0);
    }
}
