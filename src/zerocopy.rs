//! Zero-copy fetch responses: record data goes from the page cache to the
//! socket with sendfile(2), and the response header and per-partition
//! framing are written around the file ranges.
//!
//! How a response is spliced: the fetch handler puts a *placeholder* in each
//! partition's `records` field: a slice of a static all-zero buffer whose
//! length is that of the partition's data and whose start says which parts
//! it stands for (a local file range, or for data from the tier, ranges of
//! its disk-cache files and bytes of chunks in memory). The response is
//! encoded by `kafka-protocol` into a [`SpliceBuf`], which copies every
//! field except those placeholders: on a placeholder it cuts the bytes so
//! far into a part and puts the placeholder's parts next. The result is a
//! list of [`Part`]s that the connection writer sends in order: bytes with
//! `write`, file ranges with [`send_file`].
//!
//! Safety of the data: a range covers whole batches below the high
//! watermark of a segment file, which are never rewritten, or whole batches
//! in a disk-cache file, which is written once under a temporary name and
//! never changed after; a file deleted after the range was taken stays
//! readable through the open descriptor.
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

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A byte range of a file that holds whole record batches (a segment of
/// the local log, or an entry of the tier's disk cache), and one piece of a
/// response frame body: bytes, or such a range. They are the tier's types,
/// so its reads come out as parts unchanged.
pub use tiering::{FileSlice as FileRegion, Piece as Part};

/// Bytes in all of `parts`.
pub fn parts_len(parts: &[Part]) -> u64 {
    parts.iter().map(Part::len).sum()
}

/// Placeholders are slices of this; the largest placeholder ends within it.
/// Allocated zeroed on first use (the allocator maps fresh pages for a
/// request this large) and never written, so it costs address space, not
/// memory. Not a zero-filled `static`: that would be read-only data, stored
/// in full in every binary that links this module.
const ZEROS_LEN: usize = 256 << 20;
static ZEROS: std::sync::LazyLock<Box<[u8]>> =
    std::sync::LazyLock::new(|| vec![0; ZEROS_LEN].into_boxed_slice());

/// The placeholder for the parts numbered `index` (of one response) of
/// `len` bytes in all, or `None` when it would not fit (the caller then
/// sends the bytes instead).
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
    regions: Vec<(usize, Vec<Part>)>,
}

impl SpliceBuf {
    /// A buffer for a response whose placeholders stand for `regions`
    /// (placeholder index, the parts it stands for).
    pub fn new(regions: Vec<(usize, Vec<Part>)>) -> SpliceBuf {
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
            self.parts.push(Part::Mem(self.out.split().freeze()));
        }
        self.parts
    }

    fn lift(&mut self, index: usize, len: usize) -> bool {
        let Some(at) = self
            .regions
            .iter()
            .position(|(i, r)| *i == index && parts_len(r) == len as u64)
        else {
            return false;
        };
        let (_, region) = self.regions.swap_remove(at);
        if !self.out.is_empty() {
            self.before += self.out.len();
            self.parts.push(Part::Mem(self.out.split().freeze()));
        }
        self.before += len;
        self.parts.extend(region);
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

/// Largest read of [`copy_file`]: the buffer it reuses per connection.
const COPY_CHUNK: usize = 128 * 1024;

/// Writes `region` to `w` by reading it into `scratch` (grown once to at
/// most `COPY_CHUNK`, 128 KiB, and reused), for connections that cannot take
/// sendfile (TLS: the bytes must pass through the encryption). A file
/// shorter than the range is an `UnexpectedEof` error.
pub async fn copy_file<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    region: &FileRegion,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    use tokio::io::AsyncWriteExt;
    let want = usize::try_from(region.len)
        .unwrap_or(usize::MAX)
        .min(COPY_CHUNK);
    if scratch.len() < want {
        scratch.resize(want, 0);
    }
    let mut offset = region.position;
    let end = region.position + region.len;
    while offset < end {
        let n = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(scratch.len());
        // Page-cache data, as sendfile would read it on this thread.
        let read = region.file.read_at(&mut scratch[..n], offset)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than the range being sent",
            ));
        }
        w.write_all(&scratch[..read]).await?;
        offset += read as u64;
    }
    Ok(())
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
                let bytes = rest.read()?;
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
    use std::sync::Arc;

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
    /// plain encoding in every version. A partition's records are one file
    /// range, bytes then a range, or two ranges of different files.
    #[test]
    fn spliced_encoding_equals_plain_encoding() {
        let contents: Vec<Vec<u8>> = vec![vec![7u8; 300], b"second-range".to_vec(), vec![1; 5]];
        for version in 4..=16i16 {
            let regions: Vec<Vec<Part>> = vec![
                vec![Part::File(region(&contents[0]))],
                vec![
                    Part::Mem(Bytes::from_static(b"second-")),
                    Part::File(region(b"range")),
                ],
                vec![Part::File(region(&[1; 2])), Part::File(region(&[1; 3]))],
            ];
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
                let len = parts_len(r);
                holders.push(placeholder(index, len).expect("fits"));
                with_index.push((index, r.clone()));
                index += len as usize;
            }
            let spliced = build(holders);
            let mut buf = SpliceBuf::new(with_index);
            spliced.encode(&mut buf, version).expect("encode");
            let parts = buf.finish();
            assert_eq!(
                parts.iter().filter(|p| matches!(p, Part::File(_))).count(),
                4
            );
            let got = Part::join(&parts).expect("read");
            assert_eq!(got, expected, "version {version}");
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
        assert!(matches!(&buf.finish()[..], [Part::Mem(b)] if &b[..] == b"abc"));
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
