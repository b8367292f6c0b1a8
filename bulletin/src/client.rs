//! Client side of the bulletin protocol, used by vmvpn, `bulletin ls` and the load generator.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use thiserror::Error;

use crate::frames::{self, FrameError};
use crate::proof::Verifier;
use crate::proto::{
    BulletinStatus, ClientMsg, Credential, HostAlerts, HostPaths, HostReport, HostServices,
    HostVmNames, LanProof, MAX_SERVER_FRAME, MIN_VERSION, NAMES_SINCE, PATHS_SINCE, Record,
    RefuseCode, Register, SERVICES_SINCE, STATUS_SINCE, STORE_SINCE, ServerMsg,
};
use crate::tls::{PinnedVerifier, TlsError, client_config};

/// Why talking to the bulletin failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Bad fingerprint string or TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server presented another certificate: never connect to it.
    #[error(
        "the bulletin at {server} presents certificate {got}, but the config pins {expected}: \
         wrong server, or a new bulletin state dir (check with `bulletin fingerprint`)"
    )]
    Fingerprint {
        /// Server address.
        server: SocketAddr,
        /// Pinned fingerprint.
        expected: String,
        /// What it presented.
        got: String,
    },
    /// Could not reach the server or the connection failed.
    #[error("bulletin at {server}: {message}")]
    Connect {
        /// Server address.
        server: SocketAddr,
        /// What happened.
        message: String,
    },
    /// The server refused a request.
    #[error("bulletin refused: {reason}")]
    Refused {
        /// Kind.
        code: RefuseCode,
        /// Its explanation.
        reason: String,
    },
    /// Unexpected message or broken stream.
    #[error("bulletin protocol: {0}")]
    Protocol(String),
    /// No bulletin address was given.
    #[error("no bulletin address: name one in [bulletin] server or servers")]
    NoServer,
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// A client endpoint pinned to one bulletin.
pub struct Client {
    endpoint: Endpoint,
    verifier: Arc<PinnedVerifier>,
    server: SocketAddr,
    expected: String,
}

/// What the bulletin said in its `Challenge`.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// Nonce to prove LAN membership over.
    pub nonce: [u8; 32],
    /// The bulletin's start epoch.
    pub epoch: u64,
    /// Lease length.
    pub lease_ttl: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// The protocol version the bulletin speaks (what it takes beyond `MIN_VERSION`).
    pub version: u16,
}

/// What a reader proves to read the registry (`bulletin ls`, `bulletin matrix`).
#[derive(Debug, Clone)]
pub enum ReadAuth {
    /// No credential: the bulletin refuses reads.
    None,
    /// The operator token's verifier: every LAN.
    Operator(Verifier),
    /// A LAN's verifier (from its secret): that LAN.
    Lan {
        /// LAN name.
        name: String,
        /// Its verifier.
        verifier: Verifier,
    },
}

/// An open stream to the bulletin, after the challenge.
pub struct Session {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    /// The bulletin's terms.
    pub terms: Terms,
}

impl Client {
    /// A client for `server`, trusting only the certificate with `fingerprint`.
    pub fn new(server: SocketAddr, fingerprint: &str) -> Result<Self, ClientError> {
        let (mut cfg, verifier) = client_config(fingerprint)?;
        let mut transport = quinn::TransportConfig::default();
        // Keeps NAT bindings (often 30 s for UDP) without loading a bulletin of thousands of
        // hosts; a dead bulletin is noticed by the unanswered heartbeat, not by this.
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            15_000,
        ))));
        cfg.transport_config(Arc::new(transport));
        let bind: SocketAddr = if server.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = Endpoint::client(bind).map_err(|e| ClientError::Connect {
            server,
            message: format!("cannot bind: {e}"),
        })?;
        endpoint.set_default_client_config(cfg);
        Ok(Client {
            endpoint,
            verifier,
            server,
            expected: fingerprint.trim().to_string(),
        })
    }

    /// The bulletin's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Connect, open the stream and read the challenge.
    pub async fn connect(&self) -> Result<Session, ClientError> {
        let server = self.server;
        let connecting = self
            .endpoint
            .connect(server, "vmvpn-bulletin")
            .map_err(|e| ClientError::Connect {
                server,
                message: e.to_string(),
            })?;
        let conn = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let Some(got) = self.verifier.mismatch.lock().ok().and_then(|m| m.clone()) {
                    return Err(ClientError::Fingerprint {
                        server,
                        expected: self.expected.clone(),
                        got,
                    });
                }
                return Err(ClientError::Connect {
                    server,
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    server,
                    message: "no answer within 5 s".into(),
                });
            }
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| ClientError::Connect {
            server,
            message: e.to_string(),
        })?;
        frames::write(
            &mut send,
            &ClientMsg::Hello {
                version: MIN_VERSION,
            },
        )
        .await?;
        let first = tokio::time::timeout(
            Duration::from_secs(5),
            frames::read::<ServerMsg>(&mut recv, MAX_SERVER_FRAME),
        )
        .await
        .map_err(|_| ClientError::Protocol("no challenge within 5 s".into()))??;
        let terms = match first {
            ServerMsg::Challenge {
                version,
                nonce,
                epoch,
                lease_ttl_ms,
                heartbeat_ms,
            } => Terms {
                version,
                nonce,
                epoch,
                // Within what any bulletin.toml allows: timers from the wire never overflow.
                lease_ttl: Duration::from_millis(lease_ttl_ms.clamp(200, 86_400_000)),
                heartbeat: Duration::from_millis(heartbeat_ms.clamp(100, 3_600_000)),
            },
            ServerMsg::Refused { code, reason } => {
                return Err(ClientError::Refused { code, reason });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a challenge, got {other:?}"
                )));
            }
        };
        Ok(Session {
            conn,
            send,
            recv,
            terms,
        })
    }

    /// Connect and prove `auth` (nothing to prove for `ReadAuth::None`).
    pub async fn connect_reader(&self, auth: &ReadAuth) -> Result<Session, ClientError> {
        let mut s = self.connect().await?;
        let nonce = s.terms.nonce;
        let cred = match auth {
            ReadAuth::None => return Ok(s),
            ReadAuth::Operator(v) => Credential::Operator {
                proof: v.prove_operator(&nonce),
            },
            ReadAuth::Lan { name, verifier } => Credential::Lans(vec![LanProof {
                name: name.clone(),
                proof: verifier.prove(&nonce, 0, name),
            }]),
        };
        s.send(&ClientMsg::Auth(cred)).await?;
        match s.recv().await? {
            ServerMsg::Ack { .. } => Ok(s),
            ServerMsg::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
            other => Err(ClientError::Protocol(format!(
                "expected an ack of the credential, got {other:?}"
            ))),
        }
    }

    /// Connect and list the registry (`bulletin ls`).
    pub async fn query(
        &self,
        auth: &ReadAuth,
        lan: Option<String>,
    ) -> Result<Vec<Record>, ClientError> {
        let mut s = self.connect_reader(auth).await?;
        s.send(&ClientMsg::Query { lan }).await?;
        let r = match s.recv().await? {
            ServerMsg::Records(r) => Ok(r),
            ServerMsg::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
            other => Err(ClientError::Protocol(format!(
                "expected records, got {other:?}"
            ))),
        };
        s.close();
        r
    }

    /// Connect and fetch the hosts' latest alerts (`bulletin alerts`).
    pub async fn alerts(
        &self,
        auth: &ReadAuth,
        lan: Option<String>,
    ) -> Result<Vec<HostAlerts>, ClientError> {
        let mut s = self.connect_reader(auth).await?;
        s.send(&ClientMsg::AlertsQuery { lan }).await?;
        let r = match s.recv().await? {
            ServerMsg::Alerts(a) => Ok(a),
            ServerMsg::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
            other => Err(ClientError::Protocol(format!(
                "expected alerts, got {other:?}"
            ))),
        };
        s.close();
        r
    }

    /// Connect and fetch the bulletin's own state (`bulletin status`).
    pub async fn status(&self, auth: &ReadAuth) -> Result<BulletinStatus, ClientError> {
        let mut s = self.connect_reader(auth).await?;
        if s.terms.version < STATUS_SINCE {
            s.close();
            return Err(ClientError::Protocol(format!(
                "this bulletin speaks protocol {}, and `status` needs {STATUS_SINCE}: upgrade the bulletin",
                s.terms.version
            )));
        }
        let with_store = s.terms.version >= STORE_SINCE;
        s.send(if with_store {
            &ClientMsg::StoreStatus
        } else {
            &ClientMsg::Status
        })
        .await?;
        let r = match s.recv().await? {
            ServerMsg::Status(st) => Ok(st),
            ServerMsg::StoreStatus {
                mut status,
                store_up,
            } => {
                status.store_up = store_up;
                Ok(status)
            }
            ServerMsg::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
            other => Err(ClientError::Protocol(format!(
                "expected the bulletin's status, got {other:?}"
            ))),
        };
        s.close();
        r
    }

    /// Connect and fetch the hosts' latest telemetry reports (`bulletin matrix`).
    pub async fn matrix(
        &self,
        auth: &ReadAuth,
        lan: Option<String>,
    ) -> Result<Vec<HostReport>, ClientError> {
        Ok(self.matrix_named(auth, lan).await?.reports)
    }

    /// The hosts' latest reports, their VM names (none from a bulletin older than
    /// [`NAMES_SINCE`]), their services (none from one older than [`SERVICES_SINCE`])
    /// and their paths (none from one older than [`PATHS_SINCE`]), on one connection.
    pub async fn matrix_named(
        &self,
        auth: &ReadAuth,
        lan: Option<String>,
    ) -> Result<MatrixParts, ClientError> {
        let mut s = self.connect_reader(auth).await?;
        let r = async {
            let mut parts = MatrixParts::default();
            s.send(&ClientMsg::Matrix { lan: lan.clone() }).await?;
            parts.reports = match s.recv().await? {
                ServerMsg::Matrix(r) => r,
                other => return Err(unexpected("a matrix", other)),
            };
            if s.terms.version < NAMES_SINCE {
                return Ok(parts);
            }
            s.send(&ClientMsg::NamesQuery { lan: lan.clone() }).await?;
            parts.names = match s.recv().await? {
                ServerMsg::VmNames(n) => n,
                other => return Err(unexpected("VM names", other)),
            };
            if s.terms.version < SERVICES_SINCE {
                return Ok(parts);
            }
            s.send(&ClientMsg::ServicesQuery { lan: lan.clone() })
                .await?;
            parts.services = match s.recv().await? {
                ServerMsg::Services(v) => v,
                other => return Err(unexpected("services", other)),
            };
            if s.terms.version < PATHS_SINCE {
                return Ok(parts);
            }
            s.send(&ClientMsg::PathsQuery { lan }).await?;
            parts.paths = match s.recv().await? {
                ServerMsg::Paths(v) => v,
                other => return Err(unexpected("paths", other)),
            };
            Ok(parts)
        }
        .await;
        s.close();
        r
    }
}

/// What `bulletin matrix` shows, as [`Client::matrix_named`] reads it.
#[derive(Debug, Default)]
pub struct MatrixParts {
    /// Every host's latest report per LAN.
    pub reports: Vec<HostReport>,
    /// Their VM names.
    pub names: Vec<HostVmNames>,
    /// Their services.
    pub services: Vec<HostServices>,
    /// Their paths to their peers.
    pub paths: Vec<HostPaths>,
}

/// A refusal as itself, any other answer as a protocol error naming what was `expected`.
fn unexpected(expected: &str, got: ServerMsg) -> ClientError {
    match got {
        ServerMsg::Refused { code, reason } => ClientError::Refused { code, reason },
        other => ClientError::Protocol(format!("expected {expected}, got {other:?}")),
    }
}

impl Session {
    /// Send one message.
    pub async fn send(&mut self, m: &ClientMsg) -> Result<(), ClientError> {
        Ok(frames::write(&mut self.send, m).await?)
    }

    /// Read one message.
    pub async fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        Ok(frames::read(&mut self.recv, MAX_SERVER_FRAME).await?)
    }

    /// Register and wait for the answer. Events (snapshots first) follow on `recv`.
    pub async fn register(&mut self, reg: Register) -> Result<(), ClientError> {
        self.send(&ClientMsg::Register(reg)).await?;
        match tokio::time::timeout(Duration::from_secs(5), self.recv())
            .await
            .map_err(|_| ClientError::Protocol("no answer to register within 5 s".into()))??
        {
            ServerMsg::Registered { .. } => Ok(()),
            ServerMsg::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
            other => Err(ClientError::Protocol(format!(
                "expected registered, got {other:?}"
            ))),
        }
    }

    /// Split into a sender and a receiver, to heartbeat while reading events.
    pub fn split(self) -> (SessionTx, SessionRx) {
        (
            SessionTx {
                conn: self.conn.clone(),
                send: self.send,
            },
            SessionRx { recv: self.recv },
        )
    }

    /// Close the connection.
    pub fn close(&self) {
        self.conn.close(0u8.into(), b"done");
    }
}

/// Sending half of a session.
pub struct SessionTx {
    conn: Connection,
    send: SendStream,
}

impl SessionTx {
    /// Send one message.
    pub async fn send(&mut self, m: &ClientMsg) -> Result<(), ClientError> {
        Ok(frames::write(&mut self.send, m).await?)
    }

    /// Close the connection.
    pub fn close(&self) {
        self.conn.close(0u8.into(), b"done");
    }

    /// Raw bytes on the stream, to forge bad frames in tests.
    #[cfg(test)]
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), quinn::WriteError> {
        self.send.write_all(bytes).await
    }
}

/// Receiving half of a session.
pub struct SessionRx {
    recv: RecvStream,
}

impl SessionRx {
    /// Read one message.
    pub async fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        Ok(frames::read(&mut self.recv, MAX_SERVER_FRAME).await?)
    }
}
