//! Transport addresses: `tcp://host:port` and `ws://host:port/path`.

use std::fmt;
use std::str::FromStr;

/// Where to listen or dial.
///
/// ```
/// use weft_mesh_driver::Addr;
/// let ws: Addr = "ws://127.0.0.1:9001/mesh".parse().unwrap();
/// assert_eq!(ws.host_port(), "127.0.0.1:9001");
/// assert_eq!(ws.to_string(), "ws://127.0.0.1:9001/mesh");
/// let tcp: Addr = "127.0.0.1:9000".parse().unwrap();
/// assert_eq!(tcp.to_string(), "tcp://127.0.0.1:9000");
/// assert!("udp://x:1".parse::<Addr>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Addr {
    /// A TCP stream of `[u16 len][body]` transport messages.
    Tcp {
        /// `host:port`.
        host_port: String,
    },
    /// A WebSocket (RFC 6455) carrying one body per binary message.
    Ws {
        /// `host:port`.
        host_port: String,
        /// The HTTP path, starting with `/`.
        path: String,
    },
}

/// Why a string is not an [`Addr`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("bad address {0:?}: expected tcp://host:port, ws://host:port/path or host:port")]
pub struct AddrError(pub String);

impl Addr {
    /// The `host:port` part.
    pub fn host_port(&self) -> &str {
        match self {
            Addr::Tcp { host_port } | Addr::Ws { host_port, .. } => host_port,
        }
    }

    /// The same kind of address with another `host:port` (e.g. the port a listener got).
    pub fn with_host_port(&self, host_port: String) -> Addr {
        match self {
            Addr::Tcp { .. } => Addr::Tcp { host_port },
            Addr::Ws { path, .. } => Addr::Ws {
                host_port,
                path: path.clone(),
            },
        }
    }
}

impl FromStr for Addr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddrError(s.to_owned());
        let (scheme, rest) = s.split_once("://").unwrap_or(("tcp", s));
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = host_port.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let host_port = host_port.to_owned();
        match scheme {
            "tcp" if path.is_empty() => Ok(Addr::Tcp { host_port }),
            "ws" => Ok(Addr::Ws {
                host_port,
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp { host_port } => write!(f, "tcp://{host_port}"),
            Addr::Ws { host_port, path } => write!(f, "ws://{host_port}{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["tcp://[::1]:80", "ws://localhost:1/", "ws://h:2/a/b"] {
            assert_eq!(s.parse::<Addr>().unwrap().to_string(), s);
        }
        assert_eq!("ws://h:3".parse::<Addr>().unwrap().to_string(), "ws://h:3/");
        for bad in [
            "tcp://h",
            "tcp://:1",
            "tcp://h:99999",
            "tcp://h:1/x",
            "http://h:1",
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad}");
        }
    }
}
