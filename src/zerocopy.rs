//! Zero-copy fetch responses: record data goes from the page cache to the
//! socket with sendfile(2), and the response header and per-partition
//! framing are written around the file ranges.
//!
//! How a response is spliced: the fetch handler puts a *placeholder* in each
//! partition's `records` field: a slice of a static all-zero buffer whose
//! length is the file range's and whose start says which range it stands for.
//! The response is encoded by `kafka-protocol` into a [`SpliceBuf`], which
//! copies every field except those placeholders: on a placeholder it cuts
//! the bytes so far into a part and records the file range as the next
//! part. The result is a list of [`Part`]s that the connection writer sends
//! in order: bytes with `write`, file ranges with [`send_file`].
//!
//! Safety of the data: a range covers whole batches below the high
//! watermark of a segment file, which are never rewritten; a segment deleted
//! after the range was taken stays readable through the open descriptor.
//! If the file turns out shorter than the range, the connection is closed
//! (the frame length was already sent), never padded with other bytes.
//!
//! This is one of the two modules allowed `unsafe` (the other is the
//! allocator): the `sendfile` call, and `BufMut`, whose implementation is an
//! unsafe trait, for [`SpliceBuf`].
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A byte range of a file that holds whole record batches.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

impl FileRegion {
    /// The bytes of the range, read into memory (the fallback when a range
    /// cannot be sent by sendfile).
    pub fn read_to_bytes(&self) -> io::Result<Bytes> {
        let mut buf = vec![0u8; usize::try_from(self.len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// One piece of a response frame body, in order.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    File(FileRegion),
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Placeholders are slices of this; the largest placeholder ends within it.
/// It is in `.bss` and never written, so it costs no memory.
const ZEROS_LEN: usize = 256 << 20;
static ZEROS: [u8; ZEROS_LEN] = [0; ZEROS_LEN];

/// The placeholder for file range number `index` (of one response) of
/// `len` bytes, or `None` when it would not fit (the caller then sends the
/// bytes instead).
pub fn placeholder(index: usize, len: u64) -> Option<Bytes> {
    let len = usize::try_from(len).ok().filter(|l| *l > 0)?;
    let end = index.checked_add(len).filter(|e| *e <= ZEROS_LEN)?;
    Some(Bytes::from_static(&ZEROS[index..end]))
}

/// The range index a slice stands for, when it is a placeholder.
fn placeholder_index(s: &[u8]) -> Option<usize> {
    let base = ZEROS.as_ptr() as usize;
    let at = s.as_ptr() as usize;
    (!s.is_empty() && at >= base && at + s.len() <= base + ZEROS_LEN).then(|| at - base)
}

/// An encoding buffer that lifts placeholders out into file parts (module
/// docs). Offsets it reports to the encoder count the lifted bytes, so the
/// encoding is the same as into a plain buffer.
pub struct SpliceBuf {
    out: BytesMut,
    /// Logical bytes before `out`'s start (cut parts, copied and lifted).
    before: usize,
    parts: Vec<Part>,
    regions: Vec<(usize, FileRegion)>,
}

impl SpliceBuf {
    /// A buffer for a response whose placeholders stand for `regions`
    /// (placeholder index, range).
    pub fn new(regions: Vec<(usize, FileRegion)>) -> SpliceBuf {
        SpliceBuf {
            out: BytesMut::with_capacity(1024),
            before: 0,
            parts: Vec::new(),
            regions,
        }
    }

    /// The parts of the frame body, in order.
    pub fn finish(mut self) -> Vec<Part> {
        if !self.out.is_empty() {
            self.parts.push(Part::Bytes(self.out.split().freeze()));
        }
        self.parts
    }

    fn lift(&mut self, index: usize, len: usize) -> bool {
        let Some(region) = self
            .regions
            .iter()
            .find(|(i, r)| *i == index && r.len == len as u64)
            .map(|(_, r)| r.clone())
        else {
            return false;
        };
        if !self.out.is_empty() {
            self.before += self.out.len();
            self.parts.push(Part::Bytes(self.out.split().freeze()));
        }
        self.before += len;
        self.parts.push(Part::File(region));
        true
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose
// implementation upholds `BufMut`'s contract; `put_slice` only adds a
// check before delegating or recording a part.
unsafe impl BufMut for SpliceBuf {
    fn remaining_mut(&self) -> usize {
        self.out.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded unchanged; the caller's guarantee carries over.
        unsafe { self.out.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.out.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(index) = placeholder_index(src) {
            if self.lift(index, src.len()) {
                return;
            }
        }
        self.out.put_slice(src);
    }
}

impl ByteBufMut for SpliceBuf {
    fn offset(&self) -> usize {
        self.before + self.out.len()
    }

    fn seek(&mut self, offset: usize) {
        // Only the records encoder seeks, and never back across a cut.
        let local = offset.saturating_sub(self.before);
        self.out.resize(local, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let shift = self.before;
        let start = r.start.saturating_sub(shift).min(self.out.len());
        let end = r.end.saturating_sub(shift).clamp(start, self.out.len());
        &mut self.out[start..end]
    }
}

/// Sends `region` to `stream` with sendfile(2), waiting for the socket to
/// become writable as needed. A file shorter than the range is an
/// `UnexpectedEof` error; a file system without sendfile falls back to
/// reading and writing.
pub async fn send_file(stream: &TcpStream, region: &FileRegion) -> io::Result<()> {
    let mut offset = region.position;
    let end = region.position + region.len;
    while offset < end {
        let want = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        stream.writable().await?;
        let res = stream.try_io(Interest::WRITABLE, || {
            sendfile(stream.as_raw_fd(), &region.file, &mut offset, want)
        });
        match res {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than the range being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                let rest = FileRegion {
                    file: region.file.clone(),
                    position: offset,
                    len: end - offset,
                };
                let bytes = rest.read_to_bytes()?;
                let mut sent = 0;
                while sent < bytes.len() {
                    stream.writable().await?;
                    match stream.try_write(&bytes[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One sendfile(2) call: up to `count` bytes of `file` from `*offset` to
/// the socket `out`; advances `*offset` by what was sent.
fn sendfile(out: i32, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the duration of the call (the
    // socket is borrowed, the file is owned by the caller's `Arc`), `off`
    // is a valid pointer to a local, and sendfile writes nothing else.
    let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = u64::try_from(off).map_err(io::Error::other)?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;
    use std::io::Write;

    fn region(content: &[u8]) -> FileRegion {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"prefix--").expect("write");
        f.write_all(content).expect("write");
        FileRegion {
            file: Arc::new(f),
            position: 8,
            len: content.len() as u64,
        }
    }

    /// Encodes a fetch response with these records once plainly and once
    /// spliced; the spliced parts, with the files read back, must equal the
    /// plain encoding in every version.
    #[test]
    fn spliced_encoding_equals_plain_encoding() {
        let contents: Vec<Vec<u8>> = vec![vec![7u8; 300], b"second-range".to_vec(), vec![1; 5]];
        for version in 4..=16i16 {
            let regions: Vec<FileRegion> = contents.iter().map(|c| region(c)).collect();
            let build = |records: Vec<Bytes>| {
                let partitions = records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_high_watermark(100 + i as i64)
                            .with_records(Some(r))
                    })
                    .collect();
                FetchResponse::default().with_responses(vec![
                    FetchableTopicResponse::default().with_partitions(partitions)
                ])
            };
            let plain = build(contents.iter().map(|c| Bytes::from(c.clone())).collect());
            let mut expected = BytesMut::new();
            plain.encode(&mut expected, version).expect("encode");

            let mut index = 0;
            let mut with_index = Vec::new();
            let mut holders = Vec::new();
            for r in &regions {
                holders.push(placeholder(index, r.len).expect("fits"));
                with_index.push((index, r.clone()));
                index += r.len as usize;
            }
            let spliced = build(holders);
            let mut buf = SpliceBuf::new(with_index);
            spliced.encode(&mut buf, version).expect("encode");
            let parts = buf.finish();
            assert_eq!(
                parts.iter().filter(|p| matches!(p, Part::File(_))).count(),
                3
            );
            let mut got = Vec::new();
            for p in parts {
                match p {
                    Part::Bytes(b) => got.extend_from_slice(&b),
                    Part::File(r) => got.extend_from_slice(&r.read_to_bytes().expect("read")),
                }
            }
            assert_eq!(got, expected.to_vec(), "version {version}");
        }
    }

    #[test]
    fn placeholders_past_the_buffer_are_refused() {
        assert!(placeholder(0, 0).is_none());
        assert!(placeholder(ZEROS_LEN - 10, 11).is_none());
        assert!(placeholder(usize::MAX, 1).is_none());
        assert!(placeholder(5, 10).is_some());
        // A slice that is not a placeholder is copied.
        let mut buf = SpliceBuf::new(vec![]);
        buf.put_slice(b"abc");
        assert!(matches!(&buf.finish()[..], [Part::Bytes(b)] if &b[..] == b"abc"));
    }

    #[tokio::test]
    async fn send_file_sends_the_range() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let r = region(&content);
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got)
                .await
                .expect("read");
            got
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        send_file(&stream, &r).await.expect("send");
        drop(stream);
        assert_eq!(reader.await.expect("join"), content);

        // A range past the file's end is an error, not padding.
        let short = FileRegion {
            len: r.len + 10,
            ..r.clone()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let drain = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let err = send_file(&stream, &short).await.expect_err("short file");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(stream);
        drain.await.expect("join");
    }
}
