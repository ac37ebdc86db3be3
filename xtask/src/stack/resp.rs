//! Just enough of the Redis protocol (RESP2) to ask a local Redis node a question: `PING`,
//! `CLUSTER INFO`, `ROLE`. Not a client: one command per connection, no pipelining, no
//! authentication, loopback only.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// How long a local node may take to connect or answer.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A reply, as far as the stack needs to read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple or bulk string.
    Text(String),
    Integer(i64),
    Array(Vec<Reply>),
    Nil,
}

impl Reply {
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Self::Array(items) => items,
            _ => &[],
        }
    }
}

/// Sends one command to 127.0.0.1:`port` and reads its reply; a Redis error is an `Err`.
pub fn command(port: u16, args: &[&str]) -> Result<Reply> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .with_context(|| format!("connecting to redis on {port}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(&encode(args))?;
    read_reply(&mut BufReader::new(stream))
}

/// Whether the node on `port` answers `PING`.
pub fn answers_ping(port: u16) -> bool {
    command(port, &["PING"]).is_ok_and(|reply| reply.text() == Some("PONG"))
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    bytes
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.ends_with("\r\n") {
        bail!("redis closed the connection mid-reply");
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Text(rest.to_owned())),
        "-" => bail!("redis error: {rest}"),
        ":" => Ok(Reply::Integer(rest.parse()?)),
        "$" => read_bulk(reader, rest.parse()?),
        "*" => {
            let Ok(count) = usize::try_from(rest.parse::<i64>()?) else {
                return Ok(Reply::Nil);
            };
            let items = (0..count)
                .map(|_| read_reply(reader))
                .collect::<Result<_>>()?;
            Ok(Reply::Array(items))
        }
        _ => bail!("not a RESP2 reply: {line:?}"),
    }
}

fn read_bulk(reader: &mut impl BufRead, length: i64) -> Result<Reply> {
    let Ok(length) = usize::try_from(length) else {
        return Ok(Reply::Nil);
    };
    let mut bytes = vec![0u8; length + 2];
    reader.read_exact(&mut bytes)?;
    bytes.truncate(length);
    Ok(Reply::Text(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &str) -> Reply {
        read_reply(&mut bytes.as_bytes()).expect("a reply")
    }

    #[test]
    fn commands_are_encoded_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["CLUSTER", "INFO"]),
            b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n"
        );
    }

    #[test]
    fn a_replica_role_reply_is_read_as_nested_values() {
        let reply =
            parse("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:17001\r\n$9\r\nconnected\r\n:42\r\n");
        assert_eq!(reply.items()[0].text(), Some("slave"));
        assert_eq!(reply.items()[2], Reply::Integer(17001));
    }

    #[test]
    fn nil_and_errors_are_told_apart() {
        assert_eq!(parse("$-1\r\n"), Reply::Nil);
        assert!(read_reply(&mut "-ERR no\r\n".as_bytes()).is_err());
    }
}
