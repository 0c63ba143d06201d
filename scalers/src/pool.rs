//! Shared clients, so a thousand triggers on one server hold one connection, not a thousand.
//!
//! A [`SharedPool`] maps a key (server address plus credentials) to one client. Every scaler
//! holds a [`Lease`] on its key; the client is created on first use by one caller while
//! concurrent callers wait for it, re-created with backoff after a failure or after a user
//! reports it broken, and dropped (closing the connection) when the last lease goes.
//!
//! Keys usually contain credentials: the pool never prints them, and its `Debug` shows counts only.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ScalerError;

/// First retry delay after a failed connect; doubled per failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two connection attempts: a dead server sees at most one attempt per
/// second per client, and once it is back, at most one poll (of 1 s or more) fails before the
/// next reconnects, so every trigger recovers within two polls of the server's return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Clients shared by key.
pub struct SharedPool<K, C> {
    entries: Arc<Mutex<HashMap<K, Arc<Entry<C>>>>>,
}

struct Entry<C> {
    leases: Mutex<usize>,
    state: tokio::sync::Mutex<ClientState<C>>,
}

struct ClientState<C> {
    client: Option<Arc<C>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl<K, C> Clone for SharedPool<K, C> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, C> Default for SharedPool<K, C> {
    fn default() -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, C> fmt::Debug for SharedPool<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("SharedPool").field("keys", &keys).finish()
    }
}

impl<K, C> SharedPool<K, C>
where
    K: Eq + Hash + Clone,
{
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers one more user of `key`. No connection is made until [`Lease::client`].
    pub fn lease(&self, key: K) -> Lease<K, C> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    leases: Mutex::new(0),
                    state: tokio::sync::Mutex::new(ClientState {
                        client: None,
                        failures: 0,
                        retry_at: None,
                        last_error: String::new(),
                    }),
                })
            })
            .clone();
        *entry.leases.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Lease {
            pool: self.clone(),
            key,
            entry,
        }
    }

    /// Number of distinct keys with at least one lease.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is leased.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys whose client is currently connected (a key whose connect is in flight
    /// counts as not connected; this never waits).
    pub fn connected(&self) -> usize {
        let entries: Vec<Arc<Entry<C>>> = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut n = 0;
        for entry in entries {
            if entry
                .state
                .try_lock()
                .is_ok_and(|state| state.client.is_some())
            {
                n += 1;
            }
        }
        n
    }
}

/// One user's share of a pooled client.
pub struct Lease<K, C>
where
    K: Eq + Hash + Clone,
{
    pool: SharedPool<K, C>,
    key: K,
    entry: Arc<Entry<C>>,
}

impl<K, C> fmt::Debug for Lease<K, C>
where
    K: Eq + Hash + Clone,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

impl<K, C> Lease<K, C>
where
    K: Eq + Hash + Clone,
{
    /// The shared client, connecting with `connect` if there is none.
    ///
    /// Concurrent callers wait for one connect, which is abandoned after `timeout` (a hung
    /// server must not hold every user of the key). After a failed connect, calls fail at once
    /// with the last error until the backoff delay has passed, so a dead server is not hammered
    /// by every trigger that points at it. `source_name` names the server in errors.
    pub async fn client<F, Fut>(
        &self,
        source_name: &str,
        timeout: Duration,
        connect: F,
    ) -> Result<Arc<C>, ScalerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, ScalerError>>,
    {
        let mut state = self.entry.state.lock().await;
        if let Some(client) = &state.client {
            return Ok(client.clone());
        }
        if let Some(retry_at) = state.retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(ScalerError::Source {
                    source_name: source_name.to_string(),
                    message: format!(
                        "not connected; next attempt in {}ms after: {}",
                        (retry_at - now).as_millis(),
                        state.last_error
                    ),
                });
            }
        }
        let attempt = match tokio::time::timeout(timeout, connect()).await {
            Ok(result) => result,
            Err(_) => Err(ScalerError::Timeout {
                source_name: source_name.to_string(),
                timeout,
            }),
        };
        match attempt {
            Ok(client) => {
                let client = Arc::new(client);
                state.client = Some(client.clone());
                state.failures = 0;
                state.retry_at = None;
                Ok(client)
            }
            Err(e) => {
                let backoff = INITIAL_BACKOFF
                    .saturating_mul(1u32 << state.failures.min(10))
                    .min(MAX_BACKOFF);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + backoff);
                state.last_error = e.to_string();
                Err(e)
            }
        }
    }

    /// Reports `client` broken: the next [`Lease::client`] call connects again. A client that
    /// another user already replaced is left alone.
    pub async fn invalidate(&self, client: &Arc<C>) {
        let mut state = self.entry.state.lock().await;
        if state
            .client
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, client))
        {
            state.client = None;
        }
    }
}

impl<K, C> Drop for Lease<K, C>
where
    K: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        // The map lock is taken first, as in `lease`, so a concurrent lease of the same key
        // either sees the entry before removal or creates a new one.
        let mut entries = self
            .pool
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut leases = self
            .entry
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *leases = leases.saturating_sub(1);
        if *leases == 0 {
            entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const T: Duration = Duration::from_secs(1);

    /// A fake client that counts how many exist, to observe closing.
    #[derive(Debug)]
    struct Conn {
        alive: Arc<AtomicUsize>,
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, Ordering::SeqCst);
        }
    }

    struct Server {
        connects: AtomicUsize,
        alive: Arc<AtomicUsize>,
        up: std::sync::atomic::AtomicBool,
    }

    impl Server {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                connects: AtomicUsize::new(0),
                alive: Arc::new(AtomicUsize::new(0)),
                up: std::sync::atomic::AtomicBool::new(true),
            })
        }

        async fn connect(&self) -> Result<Conn, ScalerError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            // Yield so concurrent callers really overlap with the connect.
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !self.up.load(Ordering::SeqCst) {
                return Err(ScalerError::Source {
                    source_name: "test".into(),
                    message: "connection refused".into(),
                });
            }
            self.alive.fetch_add(1, Ordering::SeqCst);
            Ok(Conn {
                alive: self.alive.clone(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_users_of_one_key_share_one_connection_until_the_last_leaves() {
        let server = Server::new();
        let pool: SharedPool<String, Conn> = SharedPool::new();
        let leases: Vec<_> = (0..200)
            .map(|_| pool.lease("redis://a".to_string()))
            .collect();
        let other = pool.lease("redis://b".to_string());
        let handles = leases.iter().map(|l| l.client("a", T, || server.connect()));
        let clients = futures::future::join_all(handles).await;
        assert!(clients.iter().all(Result::is_ok));
        other
            .client("b", T, || server.connect())
            .await
            .expect("b connects");
        assert_eq!(
            server.connects.load(Ordering::SeqCst),
            2,
            "one connect per key"
        );
        assert_eq!(pool.connected(), 2);
        drop(clients);

        let mut leases = leases;
        leases.truncate(1);
        assert_eq!(
            server.alive.load(Ordering::SeqCst),
            2,
            "still leased: still open"
        );
        drop(leases);
        assert_eq!(
            server.alive.load(Ordering::SeqCst),
            1,
            "last lease of a closes it"
        );
        assert_eq!(pool.len(), 1);
        drop(other);
        assert_eq!(server.alive.load(Ordering::SeqCst), 0);
        assert!(pool.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_backs_off_then_retries() {
        let server = Server::new();
        server.up.store(false, Ordering::SeqCst);
        let pool: SharedPool<&'static str, Conn> = SharedPool::new();
        let lease = pool.lease("k");
        let err = lease
            .client("redis 127.0.0.1:1", T, || server.connect())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "test: connection refused");
        // Within the backoff: no new attempt, and the error says why.
        let err = lease
            .client("redis 127.0.0.1:1", T, || server.connect())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not connected; next attempt in"),
            "{err}"
        );
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert_eq!(server.connects.load(Ordering::SeqCst), 1);

        tokio::time::advance(INITIAL_BACKOFF).await;
        lease.client("x", T, || server.connect()).await.unwrap_err();
        assert_eq!(server.connects.load(Ordering::SeqCst), 2);
        // The second failure doubles the wait.
        tokio::time::advance(INITIAL_BACKOFF).await;
        lease.client("x", T, || server.connect()).await.unwrap_err();
        assert_eq!(
            server.connects.load(Ordering::SeqCst),
            2,
            "still backing off"
        );

        server.up.store(true, Ordering::SeqCst);
        tokio::time::advance(INITIAL_BACKOFF).await;
        lease
            .client("x", T, || server.connect())
            .await
            .expect("recovers");
        assert_eq!(server.connects.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_client_is_replaced_once() {
        let server = Server::new();
        let pool: SharedPool<&'static str, Conn> = SharedPool::new();
        let (a, b) = (pool.lease("k"), pool.lease("k"));
        let first = a
            .client("x", T, || server.connect())
            .await
            .expect("connects");
        a.invalidate(&first).await;
        let second = b
            .client("x", T, || server.connect())
            .await
            .expect("reconnects");
        assert!(!Arc::ptr_eq(&first, &second));
        // A late report about the old client does not discard the new one.
        b.invalidate(&first).await;
        let third = a.client("x", T, || server.connect()).await.expect("same");
        assert!(Arc::ptr_eq(&second, &third));
        assert_eq!(server.connects.load(Ordering::SeqCst), 2);
        drop((first, second, third));
        assert_eq!(
            server.alive.load(Ordering::SeqCst),
            1,
            "the replaced one closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_connect_times_out_and_frees_the_key() {
        let pool: SharedPool<&'static str, ()> = SharedPool::new();
        let lease = pool.lease("k");
        let err = lease
            .client("rabbitmq 10.9.9.9:5672", T, std::future::pending)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rabbitmq 10.9.9.9:5672 did not answer within 1s"
        );
        assert_eq!(pool.connected(), 0);
        tokio::time::advance(INITIAL_BACKOFF).await;
        lease
            .client("x", T, || async { Ok(()) })
            .await
            .expect("next attempt runs");
        assert_eq!(pool.connected(), 1);
    }

    #[test]
    fn debug_shows_no_keys() {
        let pool: SharedPool<String, ()> = SharedPool::new();
        let _lease = pool.lease("redis://user:hunter2@h:6379".to_string());
        let shown = format!("{pool:?} {_lease:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
