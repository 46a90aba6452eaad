//! A few pooled connections kept back for a moment after use, so that the next append
//! takes one without a trip through the pool.
//!
//! sqlx 0.8 gives every connection back to its pool with a round trip to the server (a
//! `Sync`, on every release, not configurable), behind a spawned task and the pool's
//! semaphore. The append path runs one statement per command, so that was one round
//! trip of overhead per statement. A lane parks up to `capacity` connections for at most
//! [`LINGER`] and hands the most recently parked one to the next caller; whatever is not
//! taken in time goes back to the pool (with sqlx's check). So a quiet process holds
//! none, and the pool's other users wait at most `LINGER` for a parked one.
//!
//! **Invariant:** only a connection whose last statement ran to completion (its result
//! read, a success or an error the server reported) is parked: it is idle and in sync.
//! A connection dropped mid-statement (a cancelled future) or broken (I/O) goes back
//! through the pool, which checks it.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::Notify;

/// How long a parked connection waits for its next user before it goes back to the pool.
pub(crate) const LINGER: Duration = Duration::from_millis(2);

type Parked = Vec<(PoolConnection<Postgres>, Instant)>;

pub(crate) struct Lane {
    pool: PgPool,
    capacity: usize,
    /// Oldest first: connections are pushed and popped at the end.
    parked: Arc<Mutex<Parked>>,
    reaper: OnceLock<()>,
    /// Wakes the reaper: something was parked, or (last field, so dropped after
    /// `parked`) the lane is gone.
    wake: WakeOnDrop,
}

struct WakeOnDrop(Arc<Notify>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        // Stores a permit if the reaper is not waiting yet: it cannot miss the end.
        self.0.notify_one();
    }
}

impl Lane {
    /// A lane of up to one connection for every eight the pool may open: none for
    /// small pools (tests' and tools' pools of a few connections are left alone).
    pub(crate) fn new(pool: PgPool) -> Self {
        let capacity = pool.options().get_max_connections() as usize / 8;
        Self::with_capacity(pool, capacity)
    }

    /// A lane of at most one connection, for pools of eight or more.
    pub(crate) fn single(pool: PgPool) -> Self {
        let capacity = usize::from(pool.options().get_max_connections() >= 8);
        Self::with_capacity(pool, capacity)
    }

    fn with_capacity(pool: PgPool, capacity: usize) -> Self {
        Self {
            pool,
            capacity,
            parked: Default::default(),
            reaper: OnceLock::new(),
            wake: WakeOnDrop(Default::default()),
        }
    }

    /// The most recently parked connection, else one from the pool.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let parked = lock(&self.parked).pop();
        match parked {
            Some((connection, _)) => Ok(connection),
            None => self.pool.acquire().await,
        }
    }

    /// Keeps `connection` for the next caller, or gives it back to the pool when the
    /// lane is full. Only for connections whose last statement ran to completion.
    pub(crate) fn park(&self, connection: PoolConnection<Postgres>) {
        if self.capacity == 0 || self.pool.is_closed() {
            return;
        }
        {
            let mut parked = lock(&self.parked);
            if parked.len() >= self.capacity {
                // Dropped after the guard: back to the pool.
                return;
            }
            parked.push((connection, Instant::now()));
        }
        self.reaper.get_or_init(|| {
            tokio::spawn(reap(Arc::downgrade(&self.parked), self.wake.0.clone()));
        });
        self.wake.0.notify_one();
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // A pooled connection goes back to its pool from a spawned task; without a
        // runtime (a lane dropped after its runtime ended) that would panic, so the
        // connections are let go of instead (the pool is going away with the runtime).
        if tokio::runtime::Handle::try_current().is_err() {
            for (connection, _) in lock(&self.parked).drain(..) {
                drop(connection.leak());
            }
        }
    }
}

/// Gives connections parked for `LINGER` back to the pool; ends with the lane.
async fn reap(parked: Weak<Mutex<Parked>>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(parked) = parked.upgrade() else {
                return;
            };
            let now = Instant::now();
            let stale: Parked = {
                let mut parked = lock(&parked);
                let count = parked
                    .iter()
                    .take_while(|(_, at)| now.duration_since(*at) >= LINGER)
                    .count();
                parked.drain(..count).collect()
            };
            drop(stale);
            let next = lock(&parked).first().map(|(_, at)| *at + LINGER);
            next
        };
        match next {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => wake.notified().await,
        }
    }
}

fn lock(parked: &Mutex<Parked>) -> MutexGuard<'_, Parked> {
    // Nothing can panic while the lock is held; a poisoned lane is still consistent.
    parked.lock().unwrap_or_else(|p| p.into_inner())
}
