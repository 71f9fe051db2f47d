//! CPU used by the broker and by this process (librdkafka's threads
//! included) over a measurement, from /proc/PID/stat, as a percentage of
//! one core: on 2 cores, 200% is everything.

use std::sync::OnceLock;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub broker_pct: Option<f64>,
    pub client_pct: Option<f64>,
}

impl Cpu {
    pub fn cells(&self) -> [String; 2] {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
        [f(self.broker_pct), f(self.client_pct)]
    }
}

fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), seconds.
fn process_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// CPU counters at the start of a measurement.
pub struct Mark {
    pid: Option<u32>,
    broker: Option<f64>,
    client: Option<f64>,
    at: Instant,
}

impl Mark {
    pub fn now(broker_pid: Option<u32>) -> Mark {
        Mark {
            pid: broker_pid,
            broker: broker_pid.and_then(|p| process_cpu_secs(&p.to_string())),
            client: process_cpu_secs("self"),
            at: Instant::now(),
        }
    }

    /// CPU since the mark, as % of one core over the elapsed wall time.
    pub fn cpu(&self) -> Cpu {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<f64>, now: Option<f64>| Some((now? - before?) / wall * 100.0);
        Cpu {
            broker_pct: pct(
                self.broker,
                self.pid.and_then(|p| process_cpu_secs(&p.to_string())),
            ),
            client_pct: pct(self.client, process_cpu_secs("self")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu() {
        let m = Mark::now(Some(std::process::id()));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let c = m.cpu();
        assert!(c.client_pct.is_some() && c.broker_pct.is_some(), "{c:?}");
    }
}
