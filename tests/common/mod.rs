//! Shared harness for the integration tests: start the real `strata` binary
//! on free ports, drive it with real clients (rdkafka, raw Kafka frames) and
//! check its log.
//!
//! A broker that logged an ERROR line (or panicked) fails the test that
//! started it when its handle is dropped, unless the test declared that
//! error: [`BrokerBuilder::expect_error`] / [`Broker::expect_error`] for the
//! lines containing a pattern, [`BrokerBuilder::expect_errors`] for any.
//!
//! Each test file does `mod common;` and uses the parts it needs.

#![allow(dead_code)]

pub mod clients;
pub mod groups;
pub mod lazyfs;
pub mod netns;
pub mod pki;
pub mod raw;
pub mod s3;
pub mod segments;
pub mod table;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to print both "bound to" lines.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Path of the broker binary under test.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// Options for starting a broker; see [`Broker::builder`].
#[derive(Default, Clone)]
pub struct BrokerBuilder {
    data_dir: Option<PathBuf>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// `ulimit` settings for the broker process, e.g. `-f 1024`.
    ulimits: Vec<String>,
    /// The Kafka listener address (default: a free port).
    listen: Option<String>,
    /// The admin listener address (default: a free port on 127.0.0.1).
    admin_listen: Option<String>,
    /// Run the broker in this network namespace (`ip netns exec`).
    netns: Option<String>,
    /// ERROR lines the test provokes on purpose; see [`ExpectedErrors`].
    expected_errors: ExpectedErrors,
}

/// The ERROR log lines a test provokes on purpose. Any other ERROR line
/// fails the test when the [`Broker`] is dropped.
#[derive(Default, Clone, Debug)]
struct ExpectedErrors {
    /// Every ERROR line is expected (fault injection whose messages vary).
    any: bool,
    /// ERROR lines containing one of these are expected.
    containing: Vec<String>,
}

impl ExpectedErrors {
    fn allows(&self, line: &str) -> bool {
        self.any || self.containing.iter().any(|p| line.contains(p.as_str()))
    }
}

impl BrokerBuilder {
    /// Listen for Kafka clients on `addr` (e.g. a restarted broker's old
    /// address) instead of a free port.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Listen for admin HTTP on `addr` instead of a free loopback port.
    pub fn admin_listen(mut self, addr: impl Into<String>) -> Self {
        self.admin_listen = Some(addr.into());
        self
    }

    /// Run the broker in the network namespace `name` (see [`netns`]).
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Use an existing data directory instead of a fresh tempdir.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Extra argument after `serve` (e.g. `--auto-create-topics`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Extra arguments after `serve`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Open files the broker may hold (`ulimit -n`).
    pub fn open_files_limit(mut self, n: u64) -> Self {
        self.ulimits.push(format!("-n {n}"));
        self
    }

    /// Only the soft limit on open files (`ulimit -S -n`); the hard one
    /// stays as it is.
    pub fn soft_open_files_limit(mut self, n: u64) -> Self {
        self.ulimits.push(format!("-S -n {n}"));
        self
    }

    /// Run the broker under `ulimit -f` (largest file it may write, KiB):
    /// writes past it fail as on a full disk.
    pub fn file_size_limit_kib(mut self, kib: u64) -> Self {
        self.ulimits.push(format!("-f {kib}"));
        self
    }

    /// Extra environment variable for the broker process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The test provokes ERROR lines containing `pattern`: they do not fail
    /// it. Repeatable.
    pub fn expect_error(mut self, pattern: impl Into<String>) -> Self {
        self.expected_errors.containing.push(pattern.into());
        self
    }

    /// The test provokes ERROR lines of many kinds (fault injection): none
    /// fails it. Prefer [`expect_error`](Self::expect_error) where the
    /// lines are known.
    pub fn expect_errors(mut self) -> Self {
        self.expected_errors.any = true;
        self
    }

    /// Start the broker and wait until both listeners are bound.
    pub fn start(self) -> Broker {
        let work = tempfile::Builder::new()
            .prefix("strata-it-")
            .tempdir()
            .expect("create test tempdir");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| work.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let mut broker = Broker {
            child: None,
            work: Some(work),
            data_dir,
            opts: self,
            kafka_addr: String::new(),
            listeners: Vec::new(),
            admin_addr: String::new(),
            runs: 0,
            stdout_thread: None,
        };
        broker.spawn();
        broker
    }
}

/// A running `strata serve` process.
///
/// Its stdout and stderr are copied to `stdout.log` and `stderr.log` in the
/// test's tempdir (appended across restarts). Dropping it kills the process,
/// then fails the test if the logs hold an ERROR line the test did not
/// expect; when the test is failing, the tail of both logs is printed and
/// the tempdir kept.
pub struct Broker {
    child: Option<Child>,
    work: Option<TempDir>,
    data_dir: PathBuf,
    opts: BrokerBuilder,
    kafka_addr: String,
    admin_addr: String,
    /// Every Kafka listener by name, as bound (`--listeners`).
    listeners: Vec<(String, String)>,
    runs: usize,
    stdout_thread: Option<thread::JoinHandle<()>>,
}

impl Broker {
    /// Start a broker with default options on a fresh data dir.
    pub fn start() -> Broker {
        Broker::builder().start()
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// `127.0.0.1:PORT` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        self.kafka_addr.clone()
    }

    /// The bound address of the Kafka listener called `name`.
    pub fn listener(&self, name: &str) -> String {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    /// `127.0.0.1:PORT` of the admin HTTP listener.
    pub fn admin_addr(&self) -> String {
        self.admin_addr.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn work_dir(&self) -> &Path {
        self.work.as_ref().expect("work dir").path()
    }

    pub fn stdout_log(&self) -> PathBuf {
        self.work_dir().join("stdout.log")
    }

    pub fn stderr_log(&self) -> PathBuf {
        self.work_dir().join("stderr.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panic (with the log tail) unless the broker process is still alive.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    let tail = self.log_tail();
                    panic!("broker exited unexpectedly with {status}\n{tail}");
                }
                Err(e) => panic!("try_wait on broker failed: {e}"),
            }
        }
        panic!("broker is not running");
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.runs += 1;
        let work = self.work_dir().to_path_buf();
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.join("stderr.log"))
            .expect("open stderr.log");
        let mut stdout_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.join("stdout.log"))
            .expect("open stdout.log");
        for f in [&stderr, &stdout_log] {
            let mut f: &File = f;
            let _ = writeln!(f, "===== strata-it: start #{} =====", self.runs);
        }

        let mut cmd = if let Some(ns) = &self.opts.netns {
            // ip execs the broker, so the pid is the broker's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(strata_bin());
            c
        } else if self.opts.ulimits.is_empty() {
            Command::new(strata_bin())
        } else {
            // sh sets the limits and execs the broker, so the pid is the broker's.
            let limits: Vec<String> = self
                .opts
                .ulimits
                .iter()
                .map(|l| format!("ulimit {l} && "))
                .collect();
            let mut c = Command::new("sh");
            c.args(["-c", &format!("{}exec \"$0\" \"$@\"", limits.concat())])
                .arg(strata_bin());
            c
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(if self.opts.args.iter().any(|a| a == "--listeners") {
                vec![]
            } else {
                vec![
                    "--listen",
                    self.opts.listen.as_deref().unwrap_or("127.0.0.1:0"),
                ]
            })
            .args([
                "--admin-listen",
                self.opts.admin_listen.as_deref().unwrap_or("127.0.0.1:0"),
            ])
            .args(&self.opts.args)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // A developer's own STRATA_* settings must not leak into tests.
        for (key, _) in std::env::vars() {
            if key.starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.opts.envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", strata_bin()));
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // Copy stdout to the log file forever (so the broker never blocks on
        // a full pipe) and hand lines to us until both addresses are known.
        let (tx, rx) = mpsc::channel::<String>();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = stdout_log.write_all(&buf);
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        let _ = tx.send(line);
                    }
                }
            }
        });
        self.stdout_thread = Some(handle);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut kafka = None;
        let mut admin = None;
        self.listeners.clear();
        while kafka.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail_start("timed out after 60 s waiting for the \"bound to\" lines");
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    if let Some(a) = addr_after(&line, "kafka listener bound to ") {
                        kafka = Some(a);
                    }
                    if let Some(a) = addr_after(&line, "admin listener bound to ") {
                        admin = Some(a);
                    }
                    if let Some(rest) = line.strip_prefix("listener ") {
                        if let (Some(name), Some(a)) =
                            (rest.split(' ').next(), addr_after(&line, " bound to "))
                        {
                            self.listeners.push((name.to_string(), a));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !self.is_running() {
                        self.fail_start("broker exited before binding its listeners");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is gone or closed stdout.
                    thread::sleep(Duration::from_millis(100));
                    self.fail_start("broker closed stdout before printing both \"bound to\" lines");
                }
            }
        }
        self.kafka_addr = kafka.expect("kafka addr");
        self.admin_addr = admin.expect("admin addr");
    }

    fn fail_start(&mut self, why: &str) -> ! {
        let status = match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                child.wait().ok()
            }
            None => None,
        };
        self.child = None;
        let tail = self.log_tail();
        panic!(
            "strata failed to start: {why} (exit status {status:?}, data dir {})\n{tail}",
            self.data_dir.display()
        );
    }

    /// SIGTERM and wait up to 20 s; panics unless the broker exits with 0.
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.terminate();
        if !status.success() {
            let tail = self.log_tail();
            panic!("broker did not exit cleanly after SIGTERM: {status}\n{tail}");
        }
        status
    }

    /// SIGTERM and wait up to 20 s (SIGKILL after that, then panic).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker is not running");
        let pid = child.id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    self.join_stdout();
                    return status;
                }
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.join_stdout();
                    let tail = self.log_tail();
                    panic!("broker did not exit within 20 s of SIGTERM\n{tail}");
                }
                None => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running broker.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// SIGKILL the broker (a crash) and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        let _ = child.kill();
        let _ = child.wait();
        self.join_stdout();
    }

    /// Start again on the same data dir (new ports, but the Kafka port a
    /// builder's `listen` fixed). Stops it first with SIGTERM if it is
    /// still running.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    fn join_stdout(&mut self) {
        if let Some(h) = self.stdout_thread.take() {
            let _ = h.join();
        }
    }

    /// Contents of both logs with ANSI escapes removed.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in [self.stdout_log(), self.stderr_log()] {
            let mut s = String::new();
            if let Ok(mut f) = File::open(&p) {
                let mut bytes = Vec::new();
                let _ = f.read_to_end(&mut bytes);
                s = String::from_utf8_lossy(&bytes).into_owned();
            }
            out.push_str(&strip_ansi(&s));
        }
        out
    }

    /// Lines of the broker's logs at ERROR level (or panics).
    pub fn error_log_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| is_error_line(l))
            .map(str::to_owned)
            .collect()
    }

    /// The test provokes ERROR lines containing `pattern` from here on (or
    /// did already): they do not fail it. Repeatable.
    pub fn expect_error(&mut self, pattern: impl Into<String>) {
        self.opts.expected_errors.containing.push(pattern.into());
    }

    /// ERROR lines the test did not declare with `expect_error(s)`.
    pub fn unexpected_error_lines(&self) -> Vec<String> {
        self.error_log_lines()
            .into_iter()
            .filter(|l| !self.opts.expected_errors.allows(l))
            .collect()
    }

    /// STYLE.md: a test fails on an unexpected ERROR log line. Dropping the
    /// broker checks this too; call it to check at a point of the test.
    pub fn assert_no_error_logs(&self) {
        self.assert_no_error_logs_except(&[]);
    }

    /// Like [`assert_no_error_logs`](Self::assert_no_error_logs), ignoring
    /// lines that contain one of `allowed` too.
    pub fn assert_no_error_logs_except(&self, allowed: &[&str]) {
        let bad: Vec<String> = self
            .unexpected_error_lines()
            .into_iter()
            .filter(|l| !allowed.iter().any(|a| l.contains(a)))
            .collect();
        assert!(
            bad.is_empty(),
            "broker logged {} unexpected ERROR line(s):\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    /// The last lines of stdout.log and stderr.log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for p in [self.stdout_log(), self.stderr_log()] {
            let text = std::fs::read(&p)
                .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            out.push_str(&format!(
                "----- last {} lines of {} -----\n",
                lines.len() - from,
                p.display()
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// GET `path` on the admin HTTP listener; returns (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin_addr, path)
    }

    /// Scrapes `/metrics`: each sample as `name{labels}` -> value.
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (code, body) = self.admin_get("/metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stdout();
        // A panic while unwinding aborts the process: report the test's own
        // failure and leave the log check to the tests that pass.
        let failing = thread::panicking();
        let unexpected = if failing {
            Vec::new()
        } else {
            self.unexpected_error_lines()
        };
        if failing || !unexpected.is_empty() {
            eprintln!("{}", self.log_tail());
            if let Some(work) = self.work.take() {
                let kept = work.keep();
                eprintln!("strata-it: kept broker files in {}", kept.display());
            }
        }
        if !unexpected.is_empty() {
            panic!(
                "broker logged {} unexpected ERROR line(s) (declare the ones the test provokes with \
                 expect_error):\n{}",
                unexpected.len(),
                unexpected.join("\n")
            );
        }
    }
}

fn is_error_line(line: &str) -> bool {
    line.contains(" ERROR ")
        || line.starts_with("ERROR ")
        || line.contains("\"level\":\"ERROR\"")
        || line.contains("panicked at")
}

fn addr_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// Remove ANSI colour escapes (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `127.0.0.1:PORT` with a port nobody listens on now (the caller binds it
/// a moment later).
/// A free loopback address for a listener the test binds later, on a port
/// below the kernel's ephemeral range: a port the kernel hands out for a
/// bind to port 0 or for an outgoing connection could be taken by another
/// socket (a broker's admin listener on :0, a client) before the listener
/// is bound. Ports are drawn from a random start per process, then in
/// turn, so that one test never gets the same port twice.
pub fn free_addr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
        .max(20000);
    let span = low - 10000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10000 + (start + n.wrapping_mul(7919)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port between 10000 and {low}");
}

/// Waits (up to 60 s) until the admin listener at `admin` answers `/ready`
/// with 200.
pub fn wait_ready(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(admin).is_ok() && http_get(admin, "/ready").0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "broker at {admin} never ready");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.1 GET; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("read HTTP response from {addr}{path}: {e}"));
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response from {addr}{path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A unique-ish topic name for one test.
pub fn topic_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The partition directory of `topic`-0 under a `file://` tier root.
pub fn tier_partition_dir(root: &Path, topic: &str) -> PathBuf {
    find_tier_partition_dir(root, topic)
        .unwrap_or_else(|| panic!("no tier directory for {topic} under {}", root.display()))
}

/// Like [`tier_partition_dir`], `None` while the tier holds no such topic.
pub fn find_tier_partition_dir(root: &Path, topic: &str) -> Option<PathBuf> {
    for cluster in std::fs::read_dir(root).ok()?.flatten() {
        for t in std::fs::read_dir(cluster.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if t.file_name()
                .to_string_lossy()
                .starts_with(&format!("{topic}-"))
            {
                return Some(t.path().join("0"));
            }
        }
    }
    None
}
