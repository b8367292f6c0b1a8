//! The shared registry in etcd: one key per host (`PREFIX/hosts/ID`, its JSON [`Held`]
//! record, readable with `etcdctl get --prefix`), attached to an etcd lease per host, so a
//! lease that lapses deletes the key and every bulletin's watch sees the host go. What a
//! host said lives beside it under the same lease (`PREFIX/said/ID/KIND/LAN`, postcard:
//! reports are the bulk of what is written, and only bulletins read them).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{Held, HeldSaid, LeaseId, Listing, Store, StoreError, StoreEvent, lease_secs};

/// How long one etcd request may take before the store counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Key prefix of this registry (several registries may share one etcd).
    pub prefix: String,
    /// User and password, where etcd has authentication on.
    pub user: Option<(String, String)>,
    /// TLS to the members, where they serve it.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA its members' certificates are checked against, and this
/// bulletin's own certificate where etcd asks clients for one (`--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    /// PEM of the CA.
    pub ca_pem: Vec<u8>,
    /// PEM of the client certificate and of its key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    // The key stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// From `etcd://HOST:PORT[,HOST:PORT…]`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: a store is etcd://HOST:PORT[,HOST:PORT...]"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() || endpoints.iter().any(|e| !e.contains(':')) {
            return Err(format!(
                "{url:?}: name each etcd member as HOST:PORT, separated by commas"
            ));
        }
        Ok(EtcdOptions {
            endpoints,
            prefix: "/vmvpn/bulletin".into(),
            user: None,
            tls: None,
        })
    }
}

/// The etcd store (a cheap handle: clones share the connection).
#[derive(Clone)]
pub struct EtcdStore {
    /// Replaced by `recover` with a client of the members that answer.
    client: Arc<RwLock<Client>>,
    options: Arc<EtcdOptions>,
    /// `PREFIX/`: everything this registry keeps, watched as one.
    root: String,
    /// `PREFIX/hosts/`.
    prefix: String,
    /// `PREFIX/said/`.
    said: String,
}

/// A client of these members, with `o`'s credentials and TLS.
async fn client(o: &EtcdOptions, endpoints: &[String]) -> Result<Client, StoreError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
    if let Some((u, p)) = &o.user {
        opts = opts.with_user(u.clone(), p.clone());
    }
    if let Some(t) = &o.tls {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
        if let Some((cert, key)) = &t.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(endpoints, Some(opts))
        .await
        .map_err(unreachable)
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl EtcdStore {
    /// Connect (gRPC reconnects by itself afterwards; each request has its own timeout).
    pub async fn connect(o: &EtcdOptions) -> Result<Self, StoreError> {
        let client = client(o, &o.endpoints).await?;
        let root = format!("{}/", o.prefix.trim_end_matches('/'));
        Ok(EtcdStore {
            client: Arc::new(RwLock::new(client)),
            options: Arc::new(o.clone()),
            prefix: format!("{root}hosts/"),
            said: format!("{root}said/"),
            root,
        })
    }

    /// A handle on the current client.
    fn c(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The client itself, for tests that set etcd up (users, authentication).
    #[cfg(test)]
    pub(crate) fn raw(&self) -> Client {
        self.c()
    }

    fn key(&self, host_id: u32) -> String {
        format!("{}{host_id:08x}", self.prefix)
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Held, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Malformed {
            key: String::from_utf8_lossy(key).into_owned(),
            why: e.to_string(),
        })
    }

    fn decode_said(&self, key: &[u8], value: &[u8]) -> Result<HeldSaid, StoreError> {
        postcard::from_bytes(value).map_err(|e| StoreError::Malformed {
            key: String::from_utf8_lossy(key).into_owned(),
            why: e.to_string(),
        })
    }

    /// What a watched key-value is, if it is one of ours.
    fn event(&self, put: bool, key: &[u8], value: &[u8]) -> Option<StoreEvent> {
        let decoded = if key.starts_with(self.said.as_bytes()) {
            // A host's delete removes it everywhere: what it said goes with it.
            if !put {
                return None;
            }
            self.decode_said(key, value).map(StoreEvent::Said)
        } else if put {
            self.decode(key, value).map(StoreEvent::Put)
        } else {
            return self.host_of(key).map(StoreEvent::Delete);
        };
        decoded
            .map_err(|e| tracing::warn!(error = %e, "skipping a record"))
            .ok()
    }

    fn host_of(&self, key: &[u8]) -> Option<u32> {
        let k = std::str::from_utf8(key).ok()?;
        u32::from_str_radix(k.strip_prefix(&self.prefix)?, 16).ok()
    }
}

impl Store for EtcdStore {
    async fn recover(&self) {
        let o = &self.options;
        let mut live = Vec::new();
        for e in &o.endpoints {
            let probe = async {
                let mut c = client(o, std::slice::from_ref(e)).await.ok()?;
                c.status().await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(REQUEST_TIMEOUT, probe).await {
                live.push(e.clone());
            }
        }
        // Only members that answer: requests balanced onto a dead one fail (the client
        // does not route around it). Each later failure asks all members again.
        if live.is_empty() {
            return;
        }
        if let Ok(c) = client(o, &live).await {
            if live.len() < o.endpoints.len() {
                tracing::info!(members = %live.join(","), "etcd: using the members that answer");
            }
            *self.client.write().unwrap_or_else(|p| p.into_inner()) = c;
        }
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let r = self
            .c()
            .lease_grant(lease_secs(ttl), None)
            .await
            .map_err(unreachable)?;
        Ok(r.id())
    }

    async fn put(&self, held: &Held, lease: LeaseId) -> Result<(), StoreError> {
        let value = serde_json::to_vec(held).map_err(unreachable)?;
        self.c()
            .put(
                self.key(held.host.host_id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    async fn put_said(&self, said: &HeldSaid, lease: LeaseId) -> Result<(), StoreError> {
        let key = format!(
            "{}{:08x}/{}/{}",
            self.said,
            said.host_id,
            said.said.kind(),
            said.said.lan()
        );
        let value = postcard::to_allocvec(said).map_err(unreachable)?;
        self.c()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool, StoreError> {
        // Opening the keep-alive stream sends one keep-alive and reads its answer (the
        // client's own step); an answer of TTL 0 comes back as this error.
        match self.c().lease_keep_alive(lease).await {
            Ok(_) => Ok(true),
            Err(etcd_client::Error::LeaseKeepAliveError(e)) if e.contains("not found") => Ok(false),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn delete(&self, host_id: u32, lease: LeaseId) -> Result<(), StoreError> {
        let key = self.key(host_id);
        // Only while this lease holds it: another bulletin may hold the host by now.
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        self.c().txn(txn).await.map_err(unreachable)?;
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let r = self
            .c()
            .get(self.root.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unreachable)?;
        let mut out = Listing {
            revision: r.header().map_or(0, |h| h.revision()),
            ..Listing::default()
        };
        for kv in r.kvs() {
            if kv.key().starts_with(self.said.as_bytes()) {
                // What a host said is views only: one this bulletin cannot read (a kind
                // a newer bulletin of a rolling upgrade writes) is skipped, as the watch
                // skips it, rather than failing the whole registry.
                match self.decode_said(kv.key(), kv.value()) {
                    Ok(s) => out.said.push(s),
                    Err(e) => tracing::warn!(error = %e, "skipping what a host said"),
                }
            } else if kv.key().starts_with(self.prefix.as_bytes()) {
                out.hosts.push(self.decode(kv.key(), kv.value())?);
            }
        }
        Ok(out)
    }

    async fn watch(&self, after: i64) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        let mut stream = self
            .c()
            .watch(
                self.root.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(after + 1),
                ),
            )
            .await
            .map_err(unreachable)?;
        let (tx, rx) = mpsc::channel(1024);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                if resp.canceled() {
                    tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled the watch");
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let put = ev.event_type() == EventType::Put;
                    let Some(out) = me.event(put, kv.key(), kv.value()) else {
                        continue;
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
