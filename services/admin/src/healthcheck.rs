//! `spillway-admin healthcheck --url http://127.0.0.1:8080/healthz`: one HTTP/1.1 GET over a
//! plain TCP connection, so that a container healthcheck needs no curl in the image. Only
//! `http://` URLs: it is meant for a service's own ops port on loopback.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

/// The longest status line and headers read before giving up on an answer.
const MAX_ANSWER_BYTES: u64 = 16 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// The endpoint to GET, e.g. http://127.0.0.1:8080/healthz.
    #[arg(long)]
    url: String,
    /// Connect, write and read timeout, each.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let target = Target::parse(&args.url)?;
    let status = get(&target, Duration::from_millis(args.timeout_ms))
        .with_context(|| format!("GET {}", args.url))?;
    ensure!(
        (200..300).contains(&status),
        "GET {} answered {status}",
        args.url
    );
    Ok(())
}

/// Where to connect and what to ask for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("`{url}`: only http:// URLs are supported");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .with_context(|| format!("`{url}`: `{port}` is not a port"))?,
            ),
            None => (authority, 80),
        };
        ensure!(!host.is_empty(), "`{url}`: no host");
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// Sends the request and returns the answer's status code.
fn get(target: &Target, timeout: Duration) -> Result<u16> {
    let address = (target.host.as_str(), target.port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("`{}` resolves to no address", target.host))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: `write!` would send each piece in its own segment.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: spillway-admin\r\nConnection: close\r\n\r\n",
        target.path, target.host, target.port
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer)?;
    status_code(&answer)
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(answer: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        bail!("no HTTP status line in the answer: `{line}`");
    };
    ensure!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1 answer: `{line}`"
    );
    code.parse()
        .with_context(|| format!("`{code}` is not a status code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_port_and_path_is_parsed() {
        let target = Target::parse("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!(
            target,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/healthz".into()
            }
        );
    }

    #[test]
    fn a_url_without_path_asks_for_the_root() {
        let target = Target::parse("http://gateway:8080").unwrap();
        assert_eq!(target.path, "/");
        assert_eq!(Target::parse("http://gateway/x").unwrap().port, 80);
    }

    #[test]
    fn https_and_bad_ports_are_refused() {
        assert!(Target::parse("https://127.0.0.1/healthz").is_err());
        assert!(Target::parse("http://127.0.0.1:http/healthz").is_err());
    }

    #[test]
    fn the_status_code_is_read_from_the_status_line() {
        assert_eq!(
            status_code(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").unwrap(),
            503
        );
        assert!(status_code(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    /// A one-shot server on loopback that answers `status_line`; its URL.
    fn serve_once(status_line: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Read the whole request first: closing with unread bytes would reset the
            // connection before the client read the answer.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = write!(stream, "{status_line}\r\nContent-Length: 0\r\n\r\n");
        });
        format!("http://127.0.0.1:{port}/healthz")
    }

    #[test]
    fn a_2xx_answer_is_healthy_and_a_503_is_not() {
        let healthy = Args {
            url: serve_once("HTTP/1.1 200 OK"),
            timeout_ms: 2000,
        };
        assert!(run(&healthy).is_ok());
        let unhealthy = Args {
            url: serve_once("HTTP/1.1 503 Service Unavailable"),
            timeout_ms: 2000,
        };
        let error = run(&unhealthy).unwrap_err().to_string();
        assert!(error.contains("answered 503"), "{error}");
    }
}
