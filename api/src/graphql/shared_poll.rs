//! Polls shared by every subscription that asks the database the same question.
//!
//! A subscription that polls on its own costs one query per subscriber per interval:
//! one manager account (anyone can sign up for one) with 200 sockets of 100
//! `logPosition` subscriptions asked for 40,000 queries a second, starved the pool the
//! whole process shares and made ordinary queries wait seconds. Here one task per
//! question (a [`SharedPoll`] and its key) polls while anyone listens and hands each
//! answer to every listener through a [`watch`] channel; it stops when the last
//! listener goes. A thousand listeners cost what one costs.
//!
//! **Invariant:** at most one polling task per key at a time (the map's entry and the
//! task's exit are decided under one lock).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::watch;

/// Reads the answer to one question (`key`) from the database; an error is logged and
/// the question asked again at the next interval.
pub(crate) type Fetch<K, V> =
    Arc<dyn Fn(PgPool, K) -> BoxFuture<'static, Result<V, sqlx::Error>> + Send + Sync>;

/// The running polls, by question.
type Polls<K, V> = Arc<Mutex<HashMap<K, Weak<watch::Sender<Option<V>>>>>>;

/// One kind of question (the log head, an account's credential state, a bulk job),
/// polled once per interval per key, whatever the number of listeners.
pub(crate) struct SharedPoll<K, V> {
    /// Names the poll in logs.
    what: &'static str,
    pool: PgPool,
    interval: Duration,
    fetch: Fetch<K, V>,
    polls: Polls<K, V>,
}

fn lock<K, V>(polls: &Polls<K, V>) -> MutexGuard<'_, HashMap<K, Weak<watch::Sender<Option<V>>>>> {
    // A panic while holding the lock leaves the map consistent (one insert or remove).
    polls.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K, V> SharedPoll<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + PartialEq + Send + Sync + 'static,
{
    pub(crate) fn new(
        what: &'static str,
        pool: PgPool,
        interval: Duration,
        fetch: Fetch<K, V>,
    ) -> Self {
        Self {
            what,
            pool,
            interval,
            fetch,
            polls: Arc::default(),
        }
    }

    /// A listener of `key`'s answers: `None` until the first poll answered, then the
    /// latest answer; `changed()` wakes it when the answer changes. A new question is
    /// asked at once.
    pub(crate) fn watch(&self, key: K) -> watch::Receiver<Option<V>> {
        let mut polls = lock(&self.polls);
        if let Some(sender) = polls.get(&key).and_then(Weak::upgrade) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(None);
        let sender = Arc::new(sender);
        polls.insert(key.clone(), Arc::downgrade(&sender));
        tokio::spawn(poll(
            self.what,
            self.pool.clone(),
            self.interval,
            self.fetch.clone(),
            self.polls.clone(),
            key,
            sender,
        ));
        receiver
    }
}

/// Asks `key`'s question every `interval` while anyone listens.
async fn poll<K, V>(
    what: &'static str,
    pool: PgPool,
    interval: Duration,
    fetch: Fetch<K, V>,
    polls: Polls<K, V>,
    key: K,
    sender: Arc<watch::Sender<Option<V>>>,
) where
    K: Clone + Eq + Hash,
    V: PartialEq,
{
    loop {
        match fetch(pool.clone(), key.clone()).await {
            Ok(answer) => {
                sender.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&answer);
                    if changed {
                        *current = Some(answer);
                    }
                    changed
                });
            }
            Err(error) => tracing::warn!(poll = what, %error, "a shared poll failed; asking again"),
        }
        tokio::select! {
            _ = sender.closed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        // Decided under the lock `watch` takes: nobody can join a poll that is ending.
        let mut polls = lock(&polls);
        if sender.receiver_count() == 0 {
            if polls
                .get(&key)
                .is_some_and(|entry| std::ptr::eq(entry.as_ptr(), Arc::as_ptr(&sender)))
            {
                polls.remove(&key);
            }
            return;
        }
    }
}

/// The questions subscriptions ask over and over, each shared by its listeners.
pub(crate) struct LivePolls {
    /// The log head (`logPosition`), every `subscription_poll_interval`.
    pub log_head: SharedPoll<(), i64>,
    /// An account's state (deactivated, credential version), every
    /// `socket_recheck_interval`: the socket sessions' re-checks.
    pub credentials: SharedPoll<uuid::Uuid, (bool, u32)>,
    /// A bulk reprocessing job (`None`: gone), every `subscription_poll_interval`.
    pub bulk_jobs: SharedPoll<uuid::Uuid, Option<aula_processor::bulk::BulkJob>>,
}

impl LivePolls {
    pub(crate) fn new(pool: &PgPool, config: &crate::config::ApiConfig) -> Self {
        // 10 ms at the least: a zero interval would spin.
        let poll_interval = config
            .subscription_poll_interval
            .max(Duration::from_millis(10));
        let recheck_interval = config
            .socket_recheck_interval
            .max(Duration::from_millis(10));
        Self {
            log_head: SharedPoll::new(
                "log head",
                pool.clone(),
                poll_interval,
                Arc::new(|pool, ()| {
                    Box::pin(async move {
                        Ok(aula_eventlog::lookups::log_head(&pool).await?.unwrap_or(0))
                    })
                }),
            ),
            credentials: SharedPoll::new(
                "account state",
                pool.clone(),
                recheck_interval,
                Arc::new(|pool, user_id| {
                    Box::pin(async move { crate::auth::credential_state(&pool, user_id).await })
                }),
            ),
            bulk_jobs: SharedPoll::new(
                "bulk job",
                pool.clone(),
                poll_interval,
                Arc::new(|pool, job_id| {
                    Box::pin(async move { aula_processor::bulk::job(&pool, job_id).await })
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(calls: Arc<AtomicUsize>) -> Fetch<u8, usize> {
        Arc::new(move |_, key| {
            let calls = calls.clone();
            Box::pin(async move { Ok(calls.fetch_add(1, Ordering::SeqCst) / 3 + usize::from(key)) })
        })
    }

    fn lazy_pool() -> PgPool {
        // Never connected: the fetch above does not use it.
        sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@localhost/none")
            .unwrap()
    }

    /// Waits (up to 5 s) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s");
    }

    #[tokio::test]
    async fn listeners_of_one_key_share_its_poll_which_stops_when_they_go() {
        let calls = Arc::new(AtomicUsize::new(0));
        // An hour between polls: only the first one runs within the test.
        let polls = SharedPoll::new(
            "test",
            lazy_pool(),
            Duration::from_secs(3600),
            counting(calls.clone()),
        );
        let mut listeners: Vec<_> = (0..100).map(|_| polls.watch(7)).collect();
        for listener in &mut listeners {
            listener.changed().await.unwrap();
            assert_eq!(*listener.borrow(), Some(7));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one poll for 100 listeners"
        );
        let mut other = polls.watch(8);
        other.changed().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "another key, another poll");
        // The last listener of a key gone, its poll stops.
        listeners.clear();
        until(|| lock(&polls.polls).len() == 1).await;
        let mut again = polls.watch(7);
        again.changed().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "a new listener, a new poll"
        );
    }
}
