//! A minimal HTTP/1.1 client on `std::net::TcpStream`: keep-alive, bodies by
//! Content-Length or chunked encoding. Enough for the broker's admin port
//! (`/metrics`, `/ready`) and for unsigned requests to LocalStack S3 (bucket
//! creation, listing, ranged GETs), without adding a dependency.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// `http://host:port[/path]` split into the address and the path prefix
/// (without a trailing slash).
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// One keep-alive connection to one host; reconnects when the server closed it.
pub struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Conn {
    pub fn new(addr: &str) -> Self {
        Conn {
            addr: addr.to_string(),
            stream: None,
            timeout: Duration::from_secs(60),
        }
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .with_context(|| format!("connect to {}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(BufReader::with_capacity(256 << 10, s));
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Sends one request and reads the whole body into `body` (cleared
    /// first). Returns the status code. Retries once on a fresh connection
    /// when a kept-alive one turns out closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<u16> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers, payload, body) {
            Ok(s) => Ok(s),
            Err(e) if reused => {
                self.stream = None;
                self.try_request(method, path, headers, payload, body)
                    .with_context(|| format!("after a failed kept-alive request: {e:#}"))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<u16> {
        let host = self.addr.clone();
        let r = self.connect()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        let s = r.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(payload)?;

        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed before the response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("connection closed in the response headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        body.clear();
        if method == "HEAD" || status == 204 || status == 304 {
        } else if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
                if size == 0 {
                    // Trailers up to the empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                r.read_exact(&mut body[at..])?;
                line.clear();
                r.read_line(&mut line)?;
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            r.read_exact(body)?;
        } else {
            r.read_to_end(body)?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// One GET on a fresh connection; returns the status and the body as text.
pub fn get(url: &str) -> Result<(u16, String)> {
    let (addr, path) = split_url(url)?;
    let mut c = Conn::new(&addr);
    c.timeout = Duration::from_secs(60);
    let mut body = Vec::new();
    let path = if path.is_empty() { "/" } else { &path };
    let status = c.request("GET", path, &[("Connection", "close")], &[], &mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:4566").unwrap(),
            ("127.0.0.1:4566".into(), "".into())
        );
        assert_eq!(
            split_url("http://h/a/b/").unwrap(),
            ("h:80".into(), "/a/b".into())
        );
        assert!(split_url("https://h").is_err());
    }
}
