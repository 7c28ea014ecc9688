//! A minimal health endpoint for `watch --health ADDR`: `GET /health`
//! answers `200 ok selfdeploy <version>` while the process runs, anything
//! else 404. It is what a deploy hook's health check asks of the platform
//! after replacing it (until the service mode serves the full API).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A client that sends nothing is dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Request lines longer than this are refused.
const MAX_LINE: usize = 8192;

/// Binds `addr` now (so a port in use is an error at start, not later) and
/// answers on a thread of its own for as long as the process lives.
pub fn serve(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer(stream) {
                    tracing::debug!(%error, "health: a request failed");
                }
            }
        })?;
    Ok(bound)
}

fn answer(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_LINE as u64);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/health")) => (
            "200 OK",
            format!("ok selfdeploy {}\n", env!("CARGO_PKG_VERSION")),
        ),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn health_answers_200_and_anything_else_404() {
        let addr = serve(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))).unwrap();
        let ok = get(addr, "GET /health HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with(&format!("ok selfdeploy {}\n", env!("CARGO_PKG_VERSION"))));
        let other = get(addr, "GET / HTTP/1.0\r\n\r\n");
        assert!(other.starts_with("HTTP/1.0 404"), "{other}");
        let garbage = get(addr, "\u{0}\u{1}\r\n");
        assert!(garbage.starts_with("HTTP/1.0 404"), "{garbage}");
        // A port in use is an error at once.
        assert!(serve(addr).is_err());
    }
}
