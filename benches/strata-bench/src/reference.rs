//! The physical references measured in the same run as the broker figures:
//! a raw loopback TCP copy, a sequential disk write with fdatasync, and raw
//! ranged reads of the tier's segment objects (files under a `file://` tier,
//! HTTP ranged GETs against S3).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::http;

const BUF: usize = 1 << 20;

/// Bytes moved and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub secs: f64,
}

impl Transfer {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// Sends `bytes` over one loopback TCP connection with 1 MiB writes and
/// reads; the time runs from connect to the last byte received. The
/// sending socket uses `congestion` (the TCP congestion control the broker
/// was given) or the system's default.
pub fn loopback_copy(bytes: u64, congestion: Option<&str>) -> Result<Transfer> {
    let buf = crate::kafka::payload_pool(BUF);
    loopback(bytes, congestion, None, |mut s| {
        write_chunks(&mut s, &buf, bytes, |_| Ok(()))
    })
}

/// [`loopback_copy`] whose receiver writes what it reads to a new file in
/// `dir` (buffered writes, no sync): what receiving and storing costs the
/// machine, the floor under an acks=1 produce. The file is removed.
pub fn loopback_to_file(dir: &Path, bytes: u64, congestion: Option<&str>) -> Result<Transfer> {
    let path = dir.join(format!("strata-bench-store-{}.tmp", std::process::id()));
    let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let buf = crate::kafka::payload_pool(BUF);
    let t = loopback(bytes, congestion, Some(file), |mut s| {
        write_chunks(&mut s, &buf, bytes, |_| Ok(()))
    });
    let _ = std::fs::remove_file(&path);
    t
}

/// Writes `bytes` to `w` in writes of `buf`'s length (the last one
/// shorter), calling `after` after each write.
fn write_chunks<W: Write>(
    w: &mut W,
    buf: &[u8],
    bytes: u64,
    mut after: impl FnMut(&mut W) -> std::io::Result<()>,
) -> Result<()> {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n])?;
        after(w)?;
        left -= n as u64;
    }
    Ok(())
}

/// Sends `bytes` over one loopback TCP connection from a file in `dir`
/// that is in the page cache (written just before), with the broker's own
/// zero-copy send ([`strata::zerocopy::send_file`], sendfile(2)); the
/// receiver reads with 1 MiB reads. This is what the zero-copy fetch path
/// itself allows on the machine the bench runs on. The file is removed.
pub fn loopback_sendfile(dir: &Path, bytes: u64, congestion: Option<&str>) -> Result<Transfer> {
    let path = dir.join(format!("strata-bench-sendfile-{}.tmp", std::process::id()));
    let file_len = bytes.clamp(1, 256 << 20);
    {
        let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        write_chunks(&mut f, &crate::kafka::payload_pool(BUF), file_len, |_| {
            Ok(())
        })?;
    }
    let file = File::open(&path).with_context(|| format!("open {}", path.display()));
    let _ = std::fs::remove_file(&path);
    let file = std::sync::Arc::new(file?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    loopback(bytes, congestion, None, |s| {
        rt.block_on(async {
            s.set_nonblocking(true)?;
            let s = tokio::net::TcpStream::from_std(s)?;
            let (mut at, mut left) = (0u64, bytes);
            while left > 0 {
                let region = strata::zerocopy::FileRegion {
                    file: std::sync::Arc::clone(&file),
                    position: at,
                    len: left.min(file_len - at),
                };
                strata::zerocopy::send_file(&s, &region).await?;
                left -= region.len;
                at = (at + region.len) % file_len;
            }
            Ok(())
        })
    })
}

/// One loopback TCP connection: `send` gets the connected socket and sends
/// `bytes` on it; a thread reads them with 1 MiB reads, writing each to
/// `store` when given. The time runs from connect to the last byte
/// received (and stored).
fn loopback(
    bytes: u64,
    congestion: Option<&str>,
    mut store: Option<File>,
    send: impl FnOnce(TcpStream) -> Result<()>,
) -> Result<Transfer> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; BUF];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            if let Some(f) = store.as_mut() {
                f.write_all(&buf[..n])?;
            }
            got += n as u64;
        }
    });
    let start = Instant::now();
    let s = TcpStream::connect(addr)?;
    if let Some(name) = congestion {
        socket2::SockRef::from(&s)
            .set_tcp_congestion(name.as_bytes())
            .with_context(|| format!("TCP congestion control {name}"))?;
    }
    // The socket is closed when `send` returns, so the reader sees the end.
    send(s)?;
    let got = reader
        .join()
        .map_err(|_| anyhow!("loopback reader panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    if got != bytes {
        bail!("loopback copy received {got} of {bytes} bytes");
    }
    Ok(Transfer { bytes, secs })
}

/// The TCP congestion control new connections get by default
/// (net.ipv4.tcp_congestion_control).
pub fn system_congestion_control() -> Option<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Writes `bytes` sequentially in 1 MiB writes to a new file in `dir`;
/// `sync_every` = true calls fdatasync after every 1 MiB write, false once
/// at the end. The time includes the last fdatasync. The file is removed.
pub fn disk_write(dir: &Path, bytes: u64, sync_every: bool) -> Result<Transfer> {
    let path = dir.join(format!("strata-bench-disk-{}.tmp", std::process::id()));
    let buf = crate::kafka::payload_pool(BUF);
    let start = Instant::now();
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    write_chunks(&mut f, &buf, bytes, |f| {
        if sync_every {
            f.sync_data()?;
        }
        Ok(())
    })?;
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(Transfer { bytes, secs })
}

/// Copies a file of `bytes` (written and in the page cache first, not
/// timed) to a new one in 1 MiB reads and writes, fdatasync at the end:
/// the sequential read + write a log cleaner pass does at best. Both files
/// are removed.
pub fn disk_copy(dir: &Path, bytes: u64) -> Result<Transfer> {
    let from = dir.join(format!("strata-bench-copy-from-{}.tmp", std::process::id()));
    let to = dir.join(format!("strata-bench-copy-to-{}.tmp", std::process::id()));
    let buf = crate::kafka::payload_pool(BUF);
    let mut f = File::create(&from).with_context(|| format!("create {}", from.display()))?;
    write_chunks(&mut f, &buf, bytes, |_| Ok(()))?;
    drop(f);
    let start = Instant::now();
    let mut src = File::open(&from)?;
    let mut dst = File::create(&to).with_context(|| format!("create {}", to.display()))?;
    let mut chunk = vec![0u8; BUF];
    loop {
        let n = std::io::Read::read(&mut src, &mut chunk)?;
        if n == 0 {
            break;
        }
        dst.write_all(&chunk[..n])?;
    }
    dst.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&from)?;
    std::fs::remove_file(&to)?;
    Ok(Transfer { bytes, secs })
}

/// Latency of appending 4 KiB to a file and calling fdatasync, `n` times:
/// the floor under any `acks=all` produce that waits for its data to be on
/// disk. The file is removed.
pub fn fdatasync_latency(dir: &Path, n: usize) -> Result<crate::stats::Summary> {
    let path = dir.join(format!("strata-bench-fsync-{}.tmp", std::process::id()));
    let buf = crate::kafka::payload_pool(4096);
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(crate::stats::Summary::from_micros(&mut lat))
}

/// The disk's own group commit at a given rate: one thread appends
/// `bytes_per_sec` in a write every millisecond, another runs fdatasync
/// back to back; each write's latency runs from its write to the end of the
/// first fdatasync that started after it. This is the floor under the
/// `acks=all` produce latency at that rate (a sync never waits for anything
/// but the disk), for `secs` seconds. The file is removed.
pub fn paced_sync_latency(
    dir: &Path,
    bytes_per_sec: f64,
    secs: f64,
) -> Result<crate::stats::Summary> {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Condvar, Mutex};

    let path = dir.join(format!("strata-bench-paced-{}.tmp", std::process::id()));
    let f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let chunk = ((bytes_per_sec / 1000.0) as usize).max(1);
    let buf = crate::kafka::payload_pool(chunk);
    let ticks = ((secs * 1000.0) as u64).max(1);
    // Write times, in order; `durable` of them have their latency taken.
    let written: Mutex<Vec<Instant>> = Mutex::new(Vec::with_capacity(ticks as usize));
    let wrote = Condvar::new();
    let done = AtomicBool::new(false);
    let mut lat: Vec<u32> = Vec::with_capacity(ticks as usize);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let writer = s.spawn(|| -> Result<()> {
            let result = (|| -> Result<()> {
                for k in 0..ticks {
                    let due = Duration::from_millis(k);
                    let el = start.elapsed();
                    if el < due {
                        std::thread::sleep(due - el);
                    }
                    // Stamped before the write, as the broker's latency
                    // includes its own (it may block on dirty-page limits).
                    let at = Instant::now();
                    f.write_all_at(&buf, k * chunk as u64)?;
                    written.lock().expect("lock").push(at);
                    wrote.notify_one();
                }
                Ok(())
            })();
            // Under the lock, so the syncer cannot miss it between its
            // check and its wait.
            let guard = written.lock().expect("lock");
            done.store(true, Ordering::Release);
            drop(guard);
            wrote.notify_one();
            result
        });
        // Like the broker's rounds: a sync starts as soon as there is
        // something to sync, and covers what was written before it started.
        let mut durable = 0usize;
        loop {
            let (finished, covered) = {
                let mut times = written.lock().expect("lock");
                while times.len() == durable && !done.load(Ordering::Acquire) {
                    times = wrote.wait(times).expect("lock");
                }
                (done.load(Ordering::Acquire), times.len())
            };
            if covered == durable && finished {
                break;
            }
            f.sync_data()?;
            let now = Instant::now();
            let times = written.lock().expect("lock");
            for t in &times[durable..covered] {
                lat.push(now.duration_since(*t).as_micros().min(u32::MAX as u128) as u32);
            }
            durable = covered;
            if finished && durable == times.len() {
                break;
            }
        }
        writer.join().expect("writer thread")?;
        Ok(())
    })?;
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(crate::stats::Summary::from_micros(&mut lat))
}

/// The `.log` objects a partition's manifest names, in offset order:
/// (name, size).
pub fn manifest_log_objects(manifest: &[u8]) -> Result<Vec<(String, u64)>> {
    let json: Value = serde_json::from_slice(manifest).context("manifest json")?;
    let mut out = Vec::new();
    for seg in json["segments"].as_array().context("manifest segments")? {
        let log = &seg["objects"]["log"];
        let name = log["name"].as_str().context("log object name")?;
        let size = log["size"].as_u64().context("log object size")?;
        out.push((name.to_string(), size));
    }
    Ok(out)
}

/// Whether a path component is `<topic>-<32 hex digits>`.
fn is_topic_dir(component: &str, topic: &str) -> bool {
    component
        .strip_prefix(topic)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Per partition, the tier's `.log` files of `topic` under a `file://` tier
/// root (`<root>/<cluster>/<topic>-<id>/<partition>/`): (path, size).
pub fn file_tier_objects(
    root: &Path,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Vec<(PathBuf, u64)>>> {
    for cluster in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let cluster = cluster?.path();
        let Ok(entries) = std::fs::read_dir(&cluster) else {
            continue;
        };
        for t in entries.flatten() {
            if !is_topic_dir(&t.file_name().to_string_lossy(), topic) {
                continue;
            }
            let mut out = Vec::new();
            for p in 0..partitions {
                let dir = t.path().join(p.to_string());
                let manifest = std::fs::read(dir.join("manifest.json"))
                    .with_context(|| format!("manifest of {topic}-{p}"))?;
                out.push(
                    manifest_log_objects(&manifest)?
                        .into_iter()
                        .map(|(n, s)| (dir.join(n), s))
                        .collect(),
                );
            }
            return Ok(out);
        }
    }
    bail!("no tier directory for {topic} under {}", root.display())
}

/// Splits objects into `chunk`-sized ranges, in order: (object index,
/// offset, length).
fn ranges<T>(objects: &[(T, u64)], chunk: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    for (i, (_, size)) in objects.iter().enumerate() {
        let mut off = 0;
        while off < *size {
            let n = (*size - off).min(chunk);
            out.push((i, off, n));
            off += n;
        }
    }
    out
}

/// Runs `read` over every range with `threads` workers taking the next
/// range in order (so the objects are read front to back with `threads`
/// requests in flight, as a prefetching reader would); returns the bytes.
fn parallel_ranges<T: Sync, S>(
    objects: &[(T, u64)],
    chunk: u64,
    threads: usize,
    init: impl Fn() -> S + Sync,
    read: impl Fn(&mut S, &T, u64, u64) -> Result<()> + Sync,
) -> Result<Transfer> {
    let work = ranges(objects, chunk);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut state = init();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(obj, off, len)) = work.get(i) else {
                            return Ok(());
                        };
                        read(&mut state, &objects[obj].0, off, len)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("reader thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(Transfer {
        bytes: objects.iter().map(|(_, s)| s).sum(),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Reads every file in `chunk`-sized preads with `threads` readers.
pub fn read_files(parts: &[Vec<(PathBuf, u64)>], chunk: u64, threads: usize) -> Result<Transfer> {
    let files: Vec<(PathBuf, u64)> = parts.iter().flatten().cloned().collect();
    parallel_ranges(
        &files,
        chunk,
        threads,
        || vec![0u8; chunk as usize],
        |buf, path, off, len| {
            let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
            f.read_exact_at(&mut buf[..len as usize], off)?;
            Ok(())
        },
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A bucket on an S3 endpoint spoken to without signatures (LocalStack).
pub struct S3 {
    pub addr: String,
    /// Path prefix of the endpoint URL (usually empty).
    pub base: String,
    pub bucket: String,
}

impl S3 {
    pub fn new(endpoint: &str, bucket: &str) -> Result<S3> {
        let (addr, base) = http::split_url(endpoint)?;
        Ok(S3 {
            addr,
            base,
            bucket: bucket.to_string(),
        })
    }

    fn key_path(&self, key: &str) -> String {
        let enc: Vec<String> = key.split('/').map(percent_encode).collect();
        format!("{}/{}/{}", self.base, self.bucket, enc.join("/"))
    }

    /// PUT /bucket (200, or 409 when it already exists).
    pub fn create_bucket(&self) -> Result<()> {
        let mut c = http::Conn::new(&self.addr);
        let mut body = Vec::new();
        let path = format!("{}/{}", self.base, self.bucket);
        let st = c.request("PUT", &path, &[], &[], &mut body)?;
        if !(200..300).contains(&st) && st != 409 {
            bail!(
                "create bucket {}: HTTP {st}: {}",
                self.bucket,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Every key under `prefix` (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut c = http::Conn::new(&self.addr);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        let mut body = Vec::new();
        loop {
            let mut path = format!(
                "{}/{}?list-type=2&prefix={}",
                self.base,
                self.bucket,
                percent_encode(prefix)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", percent_encode(t)));
            }
            let st = c.request("GET", &path, &[], &[], &mut body)?;
            let xml = String::from_utf8_lossy(&body);
            if st != 200 {
                bail!("list {}: HTTP {st}: {xml}", self.bucket);
            }
            keys.extend(xml_values(&xml, "Key").into_iter().map(xml_unescape));
            token = xml_values(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if xml_values(&xml, "IsTruncated").first() != Some(&"true") || token.is_none() {
                return Ok(keys);
            }
        }
    }

    pub fn get(
        &self,
        conn: &mut http::Conn,
        key: &str,
        range: Option<(u64, u64)>,
        body: &mut Vec<u8>,
    ) -> Result<()> {
        let r;
        let mut headers = Vec::new();
        if let Some((from, to)) = range {
            r = format!("bytes={from}-{to}");
            headers.push(("Range", r.as_str()));
        }
        let st = conn.request("GET", &self.key_path(key), &headers, &[], body)?;
        if st != 200 && st != 206 {
            bail!("GET {key}: HTTP {st}: {}", String::from_utf8_lossy(body));
        }
        Ok(())
    }

    /// Per partition, the `.log` objects of `topic` under `prefix`: (key, size).
    pub fn tier_objects(
        &self,
        prefix: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<Vec<(String, u64)>>> {
        let keys = self.list(prefix)?;
        let mut out = vec![Vec::new(); partitions as usize];
        let mut found = vec![false; partitions as usize];
        let mut conn = http::Conn::new(&self.addr);
        let mut body = Vec::new();
        for key in &keys {
            let parts: Vec<&str> = key.split('/').collect();
            let n = parts.len();
            if n < 3 || parts[n - 1] != "manifest.json" || !is_topic_dir(parts[n - 3], topic) {
                continue;
            }
            let Ok(p) = parts[n - 2].parse::<usize>() else {
                continue;
            };
            if p >= out.len() {
                continue;
            }
            self.get(&mut conn, key, None, &mut body)?;
            let dir = parts[..n - 1].join("/");
            out[p] = manifest_log_objects(&body)?
                .into_iter()
                .map(|(name, size)| (format!("{dir}/{name}"), size))
                .collect();
            found[p] = true;
        }
        if let Some(p) = found.iter().position(|f| !f) {
            bail!(
                "no manifest for {topic}-{p} under s3://{}/{prefix}",
                self.bucket
            );
        }
        Ok(out)
    }

    /// Ranged GETs of `chunk` bytes over every object, `threads` keep-alive
    /// connections each taking the next range.
    pub fn read_objects(
        &self,
        parts: &[Vec<(String, u64)>],
        chunk: u64,
        threads: usize,
    ) -> Result<Transfer> {
        let objects: Vec<(String, u64)> = parts.iter().flatten().cloned().collect();
        parallel_ranges(
            &objects,
            chunk,
            threads,
            || {
                (
                    http::Conn::new(&self.addr),
                    Vec::with_capacity(chunk as usize),
                )
            },
            |(conn, body), key, off, len| {
                self.get(conn, key, Some((off, off + len - 1)), body)?;
                if body.len() as u64 != len {
                    bail!("GET {key} at {off}: {} of {len} bytes", body.len());
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_sync_latency_times_every_write() {
        let dir = std::env::temp_dir().join(format!("sb-paced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = paced_sync_latency(&dir, 1e6, 0.2).unwrap();
        assert_eq!(s.count, 200);
        assert!(s.p50_ms > 0.0 && s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        // The file is gone: the directory removes empty.
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn loopback_and_disk_move_every_byte() {
        assert_eq!(
            loopback_copy(3 * BUF as u64 + 7, None).unwrap().bytes,
            3 * BUF as u64 + 7
        );
        let d = std::env::temp_dir();
        // reno is built into every Linux kernel.
        assert_eq!(
            loopback_sendfile(&d, 3 * BUF as u64 + 7, Some("reno"))
                .unwrap()
                .bytes,
            3 * BUF as u64 + 7
        );
        assert_eq!(
            disk_write(&d, BUF as u64 + 1, true).unwrap().bytes,
            BUF as u64 + 1
        );
    }

    #[test]
    fn parses_list_xml_and_manifests() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a/b&amp;c</Key></Contents><Contents><Key>d</Key></Contents></ListBucketResult>";
        let keys: Vec<String> = xml_values(xml, "Key")
            .into_iter()
            .map(xml_unescape)
            .collect();
        assert_eq!(keys, ["a/b&c", "d"]);
        let m = br#"{"segments":[{"objects":{"log":{"name":"x.log","size":5,"crc32c":1},"index":{"name":"x.index","size":1,"crc32c":2}}}]}"#;
        assert_eq!(manifest_log_objects(m).unwrap(), [("x.log".to_string(), 5)]);
        assert!(is_topic_dir("t-0123456789abcdef0123456789abcdef", "t"));
        assert!(!is_topic_dir("t-x-0123456789abcdef0123456789abcdef", "t"));
        assert_eq!(
            ranges(&[("a", 5), ("b", 0), ("c", 2)], 2),
            [(0, 0, 2), (0, 2, 2), (0, 4, 1), (2, 0, 2)]
        );
    }
}
