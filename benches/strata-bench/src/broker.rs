//! A Strata broker started and stopped by the tool: `strata serve` on free
//! ports, its addresses read from stdout, SIGTERM to stop, restart on the
//! same data directory (a cold tier cache), peak RSS from /proc.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::http;

pub struct Broker {
    bin: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    pub bootstrap: String,
    pub admin: String,
    /// Every Kafka listener as (name, bound address).
    pub listeners: Vec<(String, String)>,
}

impl Broker {
    /// Starts `bin serve` on `data_dir` with `args` after the standard ones.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Result<Broker> {
        let b = Broker::launch(bin, data_dir, args, envs)?;
        b.wait_ready()?;
        Ok(b)
    }

    /// Starts `bin serve` as [`Broker::start`] does, without waiting until
    /// it is ready (the brokers of a cluster are ready only once a majority
    /// of its voters runs).
    pub fn launch(
        bin: &Path,
        data_dir: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Result<Broker> {
        std::fs::create_dir_all(data_dir)?;
        let log_path = data_dir.with_extension("log");
        let mut b = Broker {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            args,
            envs,
            log_path,
            child: None,
            bootstrap: String::new(),
            admin: String::new(),
            listeners: Vec::new(),
        };
        b.spawn()?;
        Ok(b)
    }

    /// The bound address of the listener called `name`.
    pub fn listener(&self, name: &str) -> Result<&str> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_str())
            .with_context(|| format!("the broker has no listener {name}"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn spawn(&mut self) -> Result<()> {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        writeln!(log, "==== strata-bench: starting {}", self.bin.display())?;
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(if self.args.iter().any(|a| a == "--listeners") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--tier-interval-ms", "500"])
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (prefix, kind) in [
                    ("kafka listener bound to ", "kafka"),
                    ("admin listener bound to ", "admin"),
                    ("listener ", "listener"),
                ] {
                    if let Some(addr) = line.trim().strip_prefix(prefix) {
                        let _ = tx.send((kind, addr.to_string()));
                    }
                }
                let _ = writeln!(log, "{line}");
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut kafka, mut admin) = (None, None);
        self.listeners.clear();
        while kafka.is_none() || admin.is_none() {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(("kafka", a)) => kafka = Some(a),
                // "NAME (PROTOCOL) bound to ADDR"
                Ok(("listener", rest)) => {
                    if let (Some(name), Some((_, addr))) =
                        (rest.split(' ').next(), rest.rsplit_once(" bound to "))
                    {
                        self.listeners.push((name.to_string(), addr.to_string()));
                    }
                }
                Ok((_, a)) => admin = Some(a),
                Err(_) => {
                    if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                        bail!("broker exited with {st} at start\n{}", self.log_tail());
                    }
                    if Instant::now() > deadline {
                        bail!("broker did not print its listeners\n{}", self.log_tail());
                    }
                }
            }
        }
        self.bootstrap = kafka.expect("kafka address");
        self.admin = admin.expect("admin address");
        Ok(())
    }

    /// Waits until `/ready` answers 200: metadata open and partitions
    /// recovered (120 s at most).
    pub fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = http::get(&format!("http://{}/ready", self.admin)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("broker not ready after 120 s\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then wait up to 60 s (SIGKILL after that).
    pub fn stop(&mut self) -> Result<()> {
        self.stop_within(Duration::from_secs(60))
    }

    /// SIGTERM, then wait up to `limit` (SIGKILL after that).
    pub fn stop_within(&mut self, limit: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("broker did not stop within {limit:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and starts again on the same data directory (new ports).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Starts the stopped broker again on the same data directory (new
    /// ports) and waits until it is ready.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGKILL (a crash), and waits for the process to end.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Resident set size of the running broker process (VmRSS), bytes.
    pub fn rss(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmRSS:").map(|k| k * 1024)
    }

    /// Open file descriptors of the running broker process.
    pub fn open_fds(&self) -> Option<usize> {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.pid()?)).ok()?;
        Some(dir.count())
    }

    /// Peak resident set size of the running broker process (VmHWM), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmHWM:").map(|k| k * 1024)
    }

    /// The broker's Prometheus metrics, `name{labels}` -> value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let (code, body) = http::get(&format!("http://{}/metrics", self.admin))?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(parse_metrics(&body))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- last lines of {}:\n{}",
            self.log_path.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("strata-bench: {e:#}");
            }
        }
    }
}

/// A `kB` field of /proc/PID/status.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The strata binary next to this one's target directory: release first.
pub fn find_strata_bin() -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/strata-bench or target/<profile>/deps/<test>.
        for a in exe.ancestors().skip(1).take(3) {
            if a.join("release").is_dir() || a.join("debug").is_dir() {
                dirs.push(a.to_path_buf());
                break;
            }
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    for d in &dirs {
        for profile in ["release", "debug"] {
            let p = d.join(profile).join("strata");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(anyhow!(
        "no strata binary under {dirs:?}: build it (cargo build --release --bin strata) or pass --strata-bin"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let m = parse_metrics(
            "# HELP x y\nstrata_tier_copy_lag_segments{topic=\"t\",partition=\"0\"} 0\nup 1.5\n",
        );
        assert_eq!(
            m.get("strata_tier_copy_lag_segments{topic=\"t\",partition=\"0\"}"),
            Some(&0.0)
        );
        assert_eq!(m.get("up"), Some(&1.5));
    }
}
