//! What the driver tells a link about its sockets: who closed and how, and how long writes waited.

use std::time::Duration;

/// One end of the proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The master's socket.
    Master,
    /// The replica's socket.
    Replica,
}

impl Side {
    /// 0 for the master, 1 for the replica.
    pub const fn index(self) -> usize {
        match self {
            Side::Master => 0,
            Side::Replica => 1,
        }
    }
}

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// The master closed its socket (or its kernel did).
    Master,
    /// The replica closed its socket.
    Replica,
    /// replscope closed it (shutdown, a fault, an unreachable master).
    Proxy,
}

impl From<Side> for ClosedBy {
    fn from(side: Side) -> Self {
        match side {
            Side::Master => ClosedBy::Master,
            Side::Replica => ClosedBy::Replica,
        }
    }
}

/// How a side ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseHow {
    /// An orderly FIN (read returned end of file).
    Fin,
    /// A TCP reset.
    Reset,
    /// Another socket error, by kind.
    Error(#[serde(serialize_with = "serialize_kind")] std::io::ErrorKind),
}

fn serialize_kind<S: serde::Serializer>(kind: &std::io::ErrorKind, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(kind)
}

/// A socket-level event, fed to a link with its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A side ended.
    Closed {
        /// Who.
        by: ClosedBy,
        /// How.
        how: CloseHow,
    },
    /// The master's connection is up, dialled from `local`.
    Dialled {
        /// The local end of the master's socket.
        local: std::net::SocketAddr,
    },
    /// Forwarding toward `side` waited this long because `side` was not reading.
    WriteBlocked {
        /// The side that was not reading.
        side: Side,
        /// How long the write waited.
        duration: Duration,
    },
}
