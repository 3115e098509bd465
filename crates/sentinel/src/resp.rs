//! RESP on the server side: requests in (multibulk or inline, with Redis' own limits and
//! error texts), replies out in RESP2 or RESP3.
//!
//! Written here rather than taken from redis-rs: redis-rs parses *replies* for a client; a
//! server must parse *requests* (including inline commands, as `redis-cli` and telnet send
//! them) from clients it does not trust, with bounds on every length before it allocates.

/// Most arguments in one command (Sentinel's commands take a handful).
pub const MAX_ARGS: usize = 1024;
/// Longest argument (a bulk string) accepted.
pub const MAX_BULK: usize = 64 * 1024;
/// Longest inline command line, and the most a client may have unparsed at once.
pub const MAX_QUERY: usize = 1024 * 1024;

/// A request that breaks the protocol: answered with this error, then the connection closes
/// (as Redis does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*<n>` with `n` not a number or too large.
    #[error("ERR Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// `$<n>` with `n` not a number or too large.
    #[error("ERR Protocol error: invalid bulk length")]
    BulkLength,
    /// Something other than `$` where a bulk string must start.
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// An inline line (or an unfinished request) longer than [`MAX_QUERY`].
    #[error("ERR Protocol error: too big inline request")]
    TooBigInline,
    /// An inline line with an unclosed quote.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// One command's arguments, the command name first.
pub type Args = Vec<Vec<u8>>;

/// Parses one request from the start of `buf`: `Ok(Some((args, used)))` when a whole one is
/// there (`args` may be empty for a blank inline line), `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf)
    } else {
        parse_inline(buf)
    }
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], from + end + 2))
}

fn number(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_multibulk(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some((head, mut at)) = line(buf, 0) else {
        return if buf.len() > MAX_QUERY {
            Err(ProtocolError::MultibulkLength)
        } else {
            Ok(None)
        };
    };
    let n = number(&head[1..]).ok_or(ProtocolError::MultibulkLength)?;
    if n > MAX_ARGS as i64 {
        return Err(ProtocolError::MultibulkLength);
    }
    if n <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    let mut args = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(first)));
        }
        let Some((len, next)) = line(buf, at) else {
            return if buf.len() - at > 32 {
                Err(ProtocolError::BulkLength)
            } else {
                Ok(None)
            };
        };
        let len = number(&len[1..]).ok_or(ProtocolError::BulkLength)?;
        if !(0..=MAX_BULK as i64).contains(&len) {
            return Err(ProtocolError::BulkLength);
        }
        let len = len as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_QUERY {
            Err(ProtocolError::TooBigInline)
        } else {
            Ok(None)
        };
    };
    if end > MAX_QUERY {
        return Err(ProtocolError::TooBigInline);
    }
    let text = &buf[..end];
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    Ok(Some((split_inline(text)?, end + 1)))
}

/// Splits an inline line as `sdssplitargs` does: whitespace-separated, double quotes (with
/// `\n`, `\r`, `\t`, `\"`, `\\` and `\xHH`) and single quotes.
fn split_inline(text: &[u8]) -> Result<Args, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= text.len() {
            break;
        }
        let mut cur = Vec::new();
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    match c {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\'
                            if i + 3 < text.len()
                                && text[i + 1] == b'x'
                                && text[i + 2].is_ascii_hexdigit()
                                && text[i + 3].is_ascii_hexdigit() =>
                        {
                            let hex = std::str::from_utf8(&text[i + 2..i + 4]).unwrap_or("0");
                            cur.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                            i += 4;
                        }
                        b'\\' if i + 1 < text.len() => {
                            cur.push(match text[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        _ => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
                if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'\\' && text.get(i + 1) == Some(&b'\'') {
                        cur.push(b'\'');
                        i += 2;
                    } else if c == b'\'' {
                        i += 1;
                        break;
                    } else {
                        cur.push(c);
                        i += 1;
                    }
                }
                if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < text.len() && !text[i].is_ascii_whitespace() {
                    cur.push(text[i]);
                    i += 1;
                }
            }
        }
        args.push(cur);
        if args.len() > MAX_ARGS {
            return Err(ProtocolError::MultibulkLength);
        }
    }
    Ok(args)
}

/// A reply, encoded for the connection's protocol version by [`Reply::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...` (the text includes its code).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` bulk string.
    Bulk(String),
    /// A bulk string RESP3 sends verbatim (`=n\r\ntxt:`), as Redis sends INFO.
    Verbatim(String),
    /// RESP2 `$-1`, RESP3 `_`.
    NullBulk,
    /// RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// `*n`.
    Array(Vec<Reply>),
    /// RESP3 `%n`; RESP2 a flat array of keys and values.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `>n` (pub/sub messages); RESP2 an array.
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Self {
        Reply::Simple("OK".into())
    }

    /// An error reply (`code message`).
    pub fn err(text: impl Into<String>) -> Self {
        Reply::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(text: impl Into<String>) -> Self {
        Reply::Bulk(text.into())
    }

    /// A map of bulk-string keys to values.
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Reply)>) -> Self {
        Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Reply::bulk(k), v))
                .collect(),
        )
    }

    /// A map of bulk-string keys to bulk-string values (Sentinel's master and replica
    /// entries).
    pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        Reply::map(pairs.into_iter().map(|(k, v)| (k, Reply::Bulk(v))))
    }

    /// The bytes of this reply in protocol `proto` (2 or 3).
    pub fn encode(&self, proto: u8, out: &mut Vec<u8>) {
        // Replies never hold CR or LF in simple strings and errors (they come from here).
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        match self {
            Reply::Simple(s) => out.extend_from_slice(format!("+{}\r\n", clean(s)).as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{}\r\n", clean(s)).as_bytes()),
            Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(s) => {
                out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(s) if proto >= 3 => {
                out.extend_from_slice(format!("={}\r\ntxt:", s.len() + 4).as_bytes());
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(s) => Reply::Bulk(s.clone()).encode(proto, out),
            Reply::NullBulk if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if proto >= 3 {
                    out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
                } else {
                    out.extend_from_slice(format!("*{}\r\n", pairs.len() * 2).as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Push(items) => {
                let mark = if proto >= 3 { '>' } else { '*' };
                out.extend_from_slice(format!("{mark}{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.encode(proto, out);
                }
            }
        }
    }

    /// [`Reply::encode`] into a new buffer.
    pub fn to_bytes(&self, proto: u8) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(proto, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_requests() {
        let req = b"*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n";
        assert_eq!(
            parse(req).unwrap(),
            Some((args(&["PING", "hello"]), req.len()))
        );
        // Every prefix is incomplete, never an error.
        for n in 0..req.len() {
            assert_eq!(parse(&req[..n]).unwrap(), None, "{n}");
        }
        assert_eq!(
            parse(b"sentinel get-master-addr-by-name \"my master\"\r\nPING").unwrap(),
            Some((
                args(&["sentinel", "get-master-addr-by-name", "my master"]),
                46
            ))
        );
        assert_eq!(parse(b"\r\n").unwrap(), Some((vec![], 2)));
        assert_eq!(parse(b"PING\n").unwrap(), Some((args(&["PING"]), 5)));
        assert_eq!(
            parse(b"echo 'it\\'s' \"\\x41\\n\"\n").unwrap(),
            Some((args(&["echo", "it's", "A\n"]), 22))
        );
    }

    #[test]
    fn bad_requests_get_redis_error_texts() {
        let e = |b: &[u8]| parse(b).unwrap_err().to_string();
        assert_eq!(e(b"*x\r\n"), "ERR Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*99999999\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            e(b"*1\r\n$-5\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n$999999999\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n:1\r\n"),
            "ERR Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            e(b"echo \"open\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
        let long = vec![b'a'; MAX_QUERY + 1];
        assert_eq!(e(&long), "ERR Protocol error: too big inline request");
    }

    #[test]
    fn replies_in_both_protocols() {
        let m = Reply::string_map([("name", "mymaster".into()), ("port", "6379".into())]);
        assert_eq!(
            m.to_bytes(2),
            b"*4\r\n$4\r\nname\r\n$8\r\nmymaster\r\n$4\r\nport\r\n$4\r\n6379\r\n"
        );
        assert_eq!(
            m.to_bytes(3),
            b"%2\r\n$4\r\nname\r\n$8\r\nmymaster\r\n$4\r\nport\r\n$4\r\n6379\r\n"
        );
        assert_eq!(Reply::NullArray.to_bytes(2), b"*-1\r\n");
        assert_eq!(Reply::NullBulk.to_bytes(2), b"$-1\r\n");
        assert_eq!(Reply::NullArray.to_bytes(3), b"_\r\n");
        assert_eq!(
            Reply::Verbatim("a:1".into()).to_bytes(3),
            b"=7\r\ntxt:a:1\r\n"
        );
        assert_eq!(Reply::Verbatim("a:1".into()).to_bytes(2), b"$3\r\na:1\r\n");
        let p = Reply::Push(vec![Reply::bulk("message")]);
        assert_eq!(p.to_bytes(3), b">1\r\n$7\r\nmessage\r\n");
        assert_eq!(p.to_bytes(2), b"*1\r\n$7\r\nmessage\r\n");
        assert_eq!(Reply::err("ERR a\r\nb").to_bytes(2), b"-ERR a  b\r\n");
    }

    proptest::proptest! {
        #[test]
        fn no_request_bytes_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((_, used))) = parse(rest) {
                proptest::prop_assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
        }
    }
}
