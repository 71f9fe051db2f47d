//! Kafka framing: a 4-byte big-endian length, then that many bytes.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame too large. size={size}, max={max}")]
    TooLarge { size: u64, max: u32 },
    #[error("frame has a negative length. size={size}")]
    Negative { size: i32 },
    #[error("connection closed mid-frame")]
    Truncated(#[source] std::io::Error),
    #[error("read failed")]
    Io(#[source] std::io::Error),
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Bytes>, FrameError> {
    match read_len(reader, max).await? {
        Some(size) => read_body(reader, size).await.map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's length prefix; `Ok(None)` on a clean end of stream.
pub async fn read_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<usize>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read(&mut len[..1]).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(FrameError::Io(e)),
    }
    reader
        .read_exact(&mut len[1..])
        .await
        .map_err(FrameError::Truncated)?;
    let size = i32::from_be_bytes(len);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    if size as u32 > max {
        return Err(FrameError::TooLarge {
            size: size as u64,
            max,
        });
    }
    Ok(Some(size as usize))
}

/// The API key a request frame starts with (-1 if it is too short), for
/// labels before the request is decoded.
pub fn api_key(frame: &[u8]) -> i16 {
    match frame {
        [a, b, ..] => i16::from_be_bytes([*a, *b]),
        _ => -1,
    }
}

/// Whether `buf` starts with a whole frame (length prefix and body), so
/// reading it needs no wait on the socket.
pub fn holds_frame(buf: &[u8]) -> bool {
    match buf {
        [a, b, c, d, rest @ ..] => {
            usize::try_from(i32::from_be_bytes([*a, *b, *c, *d])).is_ok_and(|n| rest.len() >= n)
        }
        _ => false,
    }
}

/// Reads a frame body of `size` bytes (after [`read_len`]).
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, FrameError> {
    // Read in bounded steps so a peer announcing a big frame and sending
    // nothing costs no more memory than it really sent.
    let mut buf = BytesMut::with_capacity(size.min(64 * 1024));
    while buf.len() < size {
        let want = (size - buf.len()).min(1 << 20);
        buf.reserve(want);
        let n = (&mut *reader)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(FrameError::Truncated)?;
        if n == 0 {
            return Err(FrameError::Truncated(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_and_refuses_big_ones() {
        let mut data: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 1];
        let f = read_frame(&mut data, 1024)
            .await
            .expect("ok")
            .expect("frame");
        assert_eq!(&f[..], b"abc");
        assert!(matches!(
            read_frame(&mut data, 1024).await,
            Err(FrameError::Truncated(_))
        ));
        let mut big: &[u8] = &[0x10, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut big, 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[0xff, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut neg, 1024).await,
            Err(FrameError::Negative { .. })
        ));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 1024).await.expect("ok").is_none());
    }

    #[test]
    fn holds_frame_needs_the_whole_body() {
        assert!(!holds_frame(&[]));
        assert!(!holds_frame(&[0, 0, 0]));
        assert!(holds_frame(&[0, 0, 0, 0]));
        assert!(!holds_frame(&[0, 0, 0, 2, 9]));
        assert!(holds_frame(&[0, 0, 0, 2, 9, 9]));
        assert!(holds_frame(&[0, 0, 0, 1, 9, 0, 0]));
        // A negative length is no frame (read_len refuses it).
        assert!(!holds_frame(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    }
}
