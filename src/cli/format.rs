//! kcat-style output formats (`-f '%k %s %o %p %T %h\n'`) and the escapes
//! used in delimiters and separators (`\n`, `\t`, `\r`, `\0`, `\\`).

use crate::client::ConsumedRecord;

/// Turn `\n`, `\r`, `\t`, `\0` and `\\` into bytes; other text is literal.
pub fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(other) => {
                out.push(b'\\');
                out.push(other);
            }
            None => out.push(b'\\'),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Value,
    ValueLen,
    Key,
    KeyLen,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    tokens: Vec<Token>,
}

/// What `%…` means, for help texts.
pub const FORMAT_HELP: &str = "%s value, %S value size, %k key, %K key size, %t topic, \
%p partition, %o offset, %T timestamp (ms), %h headers (k=v,k2=v2), %% a percent sign; \
escapes \\n \\t \\r \\0 \\\\";

impl Format {
    pub fn parse(fmt: &str) -> Result<Format, String> {
        let raw = unescape(fmt);
        let mut tokens = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != b'%' {
                lit.push(raw[i]);
                i += 1;
                continue;
            }
            let Some(&c) = raw.get(i + 1) else {
                return Err("format ends with a lone %".into());
            };
            i += 2;
            let t = match c {
                b'%' => {
                    lit.push(b'%');
                    continue;
                }
                b's' => Token::Value,
                b'S' => Token::ValueLen,
                b'k' => Token::Key,
                b'K' => Token::KeyLen,
                b't' => Token::Topic,
                b'p' => Token::Partition,
                b'o' => Token::Offset,
                b'T' => Token::Timestamp,
                b'h' => Token::Headers,
                other => {
                    return Err(format!(
                        "unknown format sequence %{} (known: {FORMAT_HELP})",
                        char::from(other)
                    ))
                }
            };
            if !lit.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut lit)));
            }
            tokens.push(t);
        }
        if !lit.is_empty() {
            tokens.push(Token::Literal(lit));
        }
        Ok(Format { tokens })
    }

    /// kcat's default: the value (after the key and `key_sep`, if given),
    /// then `delimiter`.
    pub fn default_for(key_sep: Option<&[u8]>, delimiter: &[u8]) -> Format {
        let mut tokens = Vec::new();
        if let Some(sep) = key_sep {
            tokens.push(Token::Key);
            tokens.push(Token::Literal(sep.to_vec()));
        }
        tokens.push(Token::Value);
        tokens.push(Token::Literal(delimiter.to_vec()));
        Format { tokens }
    }

    /// Append `r` formatted to `out`. Null keys and values print as
    /// nothing, and their sizes as -1 (as kcat does).
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, partition: i32, r: &ConsumedRecord) {
        use std::io::Write;
        for t in &self.tokens {
            // Writing to a Vec cannot fail.
            let _ = match t {
                Token::Literal(b) => out.write_all(b),
                Token::Value => out.write_all(r.value.as_deref().unwrap_or_default()),
                Token::ValueLen => {
                    write!(out, "{}", r.value.as_ref().map_or(-1, |v| v.len() as i64))
                }
                Token::Key => out.write_all(r.key.as_deref().unwrap_or_default()),
                Token::KeyLen => write!(out, "{}", r.key.as_ref().map_or(-1, |v| v.len() as i64)),
                Token::Topic => out.write_all(topic.as_bytes()),
                Token::Partition => write!(out, "{partition}"),
                Token::Offset => write!(out, "{}", r.offset),
                Token::Timestamp => write!(out, "{}", r.timestamp),
                Token::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                    Ok(())
                }
            };
        }
    }
}

/// Standard base64 (for non-UTF-8 keys and values in JSON output).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec() -> ConsumedRecord {
        ConsumedRecord {
            offset: 42,
            timestamp: 1700,
            log_append_time: false,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![
                ("a".into(), Some(Bytes::from_static(b"1"))),
                ("b".into(), None),
            ],
        }
    }

    fn render(f: &Format, r: &ConsumedRecord) -> String {
        let mut out = Vec::new();
        f.write(&mut out, "orders", 3, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn kcat_tokens() {
        let f = Format::parse("%t/%p@%o %T [%k|%K] %s(%S) {%h} 100%%\\n").unwrap();
        assert_eq!(
            render(&f, &rec()),
            "orders/3@42 1700 [k|1] hello(5) {a=1,b=} 100%\n"
        );
        let mut null = rec();
        null.key = None;
        null.value = None;
        assert_eq!(
            render(&Format::parse("%k|%K|%s|%S").unwrap(), &null),
            "|-1||-1"
        );
    }

    #[test]
    fn bad_formats_are_rejected() {
        assert!(Format::parse("%q").unwrap_err().contains("%q"));
        assert!(Format::parse("abc%").is_err());
    }

    #[test]
    fn defaults_and_escapes() {
        assert_eq!(render(&Format::default_for(None, b"\n"), &rec()), "hello\n");
        assert_eq!(
            render(&Format::default_for(Some(b"\t"), b"\n"), &rec()),
            "k\thello\n"
        );
        assert_eq!(unescape(r"a\tb\\c\0\q"), b"a\tb\\c\0\\q");
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
