//! The shared registry in etcd: one key per host (`PREFIX/hosts/ID`, its JSON [`Held`]
//! record, readable with `etcdctl get --prefix`), attached to an etcd lease per host, so a
//! lease that lapses deletes the key and every bulletin's watch sees the host go.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use super::{Held, LeaseId, Listing, Store, StoreError, StoreEvent, lease_secs};

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
        })
    }
}

/// The etcd store (a cheap handle: clones share the connection).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl EtcdStore {
    /// Connect (gRPC reconnects by itself afterwards; each request has its own timeout).
    pub async fn connect(o: &EtcdOptions) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        if let Some((u, p)) = &o.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        let client = Client::connect(&o.endpoints, Some(opts))
            .await
            .map_err(unreachable)?;
        Ok(EtcdStore {
            client,
            prefix: format!("{}/hosts/", o.prefix.trim_end_matches('/')),
        })
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

    fn host_of(&self, key: &[u8]) -> Option<u32> {
        let k = std::str::from_utf8(key).ok()?;
        u32::from_str_radix(k.strip_prefix(&self.prefix)?, 16).ok()
    }
}

impl Store for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let r = self
            .client
            .clone()
            .lease_grant(lease_secs(ttl), None)
            .await
            .map_err(unreachable)?;
        Ok(r.id())
    }

    async fn put(&self, held: &Held, lease: LeaseId) -> Result<(), StoreError> {
        let value = serde_json::to_vec(held).map_err(unreachable)?;
        self.client
            .clone()
            .put(
                self.key(held.host.host_id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool, StoreError> {
        // Opening the keep-alive stream sends one keep-alive and reads its answer (the
        // client's own step); an answer of TTL 0 comes back as this error.
        match self.client.clone().lease_keep_alive(lease).await {
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
        self.client.clone().txn(txn).await.map_err(unreachable)?;
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let r = self
            .client
            .clone()
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unreachable)?;
        let rev = r.header().map_or(0, |h| h.revision());
        let held = r
            .kvs()
            .iter()
            .map(|kv| self.decode(kv.key(), kv.value()))
            .collect::<Result<_, _>>()?;
        Ok((held, rev))
    }

    async fn watch(&self, after: i64) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        let mut stream = self
            .client
            .clone()
            .watch(
                self.prefix.clone(),
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
                    let out = match ev.event_type() {
                        EventType::Put => match me.decode(kv.key(), kv.value()) {
                            Ok(h) => StoreEvent::Put(h),
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping a record");
                                continue;
                            }
                        },
                        EventType::Delete => match me.host_of(kv.key()) {
                            Some(h) => StoreEvent::Delete(h),
                            None => continue,
                        },
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
