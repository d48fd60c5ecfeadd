//! A small blocking HTTP/1.1 client for `GET /v1/tasks/{t}/snapshot` on a peer worker.
//!
//! Owns the request, the response parsing (status line, headers, a `Content-Length`, chunked or
//! read-to-close body) and its timeouts. Does not own what the bytes mean (the caller validates
//! them with `Checkpoint::decode`) or retries (the caller's backoff). Plain HTTP only: the peers
//! are pods of the same StatefulSet behind the headless Service; no dependency is added for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Time to open a connection to one address of a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while reading a response (a large checkpoint streams continuously).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest status line or header accepted.
const MAX_LINE: usize = 8 * 1024;

/// A peer's answer.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, for error messages (at most 200 characters, trimmed).
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.trim().chars().take(200).collect()
    }
}

/// Why a peer could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://HOST:PORT[/PREFIX]`.
    #[error("failed to parse peer URL {0:?}: expected http://HOST:PORT")]
    Url(String),
    /// No address of the host accepted a connection (or the name does not resolve).
    #[error("failed to connect to {0}")]
    Connect(String, #[source] std::io::Error),
    /// The request or the response broke off.
    #[error("failed to read the answer of {0}")]
    Io(String, #[source] std::io::Error),
    /// The answer is not HTTP/1.x.
    #[error("failed to parse the answer of {0}: {1}")]
    Protocol(String, String),
}

/// `GET {base}{path}` with `Connection: close`.
pub fn get(base: &str, path: &str) -> Result<Response, ClientError> {
    get_with(base, path, None)
}

/// `GET {base}{path}` with `Connection: close` and, when given, an `Authorization` header.
pub fn get_with(
    base: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<Response, ClientError> {
    let (authority, prefix) = parse_base(base)?;
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| ClientError::Connect(authority.to_owned(), e))?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| ClientError::Connect(authority.to_owned(), last))?;
    let io = |e| ClientError::Io(authority.to_owned(), e);
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    // One write: a server that reads the request in one go sees all of it.
    let authorization = authorization
        .filter(|a| !a.contains(['\r', '\n']))
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/octet-stream\r\n\
         {authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.flush().map_err(io)?;
    read_response(BufReader::new(stream), authority)
}

/// Splits `http://host:port/prefix` into `host:port` and `/prefix` (no trailing slash).
fn parse_base(base: &str) -> Result<(&str, &str), ClientError> {
    let rest = match base.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(ClientError::Url(base.to_owned())),
        None => base,
    };
    let (authority, prefix) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(ClientError::Url(base.to_owned()));
    }
    Ok((authority, prefix))
}

fn read_response(mut reader: impl BufRead, peer: &str) -> Result<Response, ClientError> {
    let protocol = |m: &str| ClientError::Protocol(peer.to_owned(), m.to_owned());
    let status_line = read_line(&mut reader, peer)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(protocol(&format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol(&format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut reader, peer)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| protocol(&format!("header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let io = |e| ClientError::Io(peer.to_owned(), e);
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(&mut reader, peer)?
    } else if let Some(length) = find("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| protocol(&format!("content-length {length:?}")))?;
        let mut body = Vec::new();
        body.try_reserve_exact(length)
            .map_err(|_| protocol(&format!("content-length {length} too large")))?;
        reader
            .by_ref()
            .take(length as u64)
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() != length {
            return Err(protocol(&format!(
                "body ended after {} of {length} bytes",
                body.len()
            )));
        }
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map_err(io)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_line(reader: &mut impl BufRead, peer: &str) -> Result<String, ClientError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| ClientError::Io(peer.to_owned(), e))?;
    if line.last() != Some(&b'\n') {
        return Err(ClientError::Protocol(
            peer.to_owned(),
            if line.is_empty() {
                "connection closed before the answer".into()
            } else {
                "line too long or cut off".into()
            },
        ));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_chunked(reader: &mut impl BufRead, peer: &str) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, peer)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ClientError::Protocol(peer.to_owned(), format!("chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line(reader, peer)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        reader
            .by_ref()
            .take(size as u64)
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Io(peer.to_owned(), e))?;
        if body.len() - start != size {
            return Err(ClientError::Protocol(
                peer.to_owned(),
                "chunk cut off".into(),
            ));
        }
        if !read_line(reader, peer)?.is_empty() {
            return Err(ClientError::Protocol(
                peer.to_owned(),
                "no line break after a chunk".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_authority_and_prefix() {
        assert_eq!(
            parse_base("http://p-1.p-workers.shop.svc:9102").unwrap(),
            ("p-1.p-workers.shop.svc:9102", "")
        );
        assert_eq!(
            parse_base("http://127.0.0.1:80/x/").unwrap(),
            ("127.0.0.1:80", "/x")
        );
        assert_eq!(parse_base("h:1").unwrap(), ("h:1", ""));
        for bad in ["https://h:1", "http://h", "http://:1", "http://h:port"] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_with_length_chunks_or_close_are_read_whole() {
        let sized = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nX-A: b\r\n\r\nabcdef";
        let r = read_response(&sized[..], "p").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        let chunked =
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = read_response(&chunked[..], "p").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, &b"abcde"[..]));
        let closed = b"HTTP/1.0 404 Not Found\r\n\r\nnothing";
        let r = read_response(&closed[..], "p").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "nothing"));
    }

    #[test]
    fn truncated_or_foreign_answers_are_errors() {
        for bad in [
            &b""[..],
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
        ] {
            assert!(read_response(bad, "p").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_unreachable_peer_is_a_connect_error() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = get(&format!("http://127.0.0.1:{port}"), "/x").unwrap_err();
        assert!(matches!(err, ClientError::Connect(..)), "{err}");
    }
}
