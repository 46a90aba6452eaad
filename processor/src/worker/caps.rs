//! The per-class concurrency caps of one worker process (`kinds::KindClass`).
//!
//! Each capped class has a semaphore of `ProcessorConfig::class_cap` permits; a task of
//! the class runs holding one besides its slot. While a class has no permit left, the
//! claiming loop's claims leave its kinds pending (`queue::claim_for_workers_excluding`)
//! and take the other kinds behind them, so e-mails held by a slow relay never hold
//! every slot. With a permit left, the claim is the ordinary one (the hot path does not
//! change): it may then return more tasks of the class than there are permits, and
//! those wait here, claimed and leased (the heartbeat keeps them), for a permit, without
//! taking a slot; by then the class has no permit left, so the next claims take none of
//! its tasks and the wait is bounded by one claim batch.

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::ProcessorConfig;
use crate::kinds::{KindClass, TaskKind};

/// The caps of one process's classes that bind (a cap as large as the slots does not).
pub(super) struct Caps {
    classes: Vec<ClassCap>,
    /// Woken when a task of a capped class ends: the claiming loop, waiting because its
    /// claims left a full class out, may claim that class again.
    pub(super) freed: Arc<Notify>,
}

struct ClassCap {
    class: KindClass,
    kinds: Vec<&'static str>,
    permits: Arc<Semaphore>,
}

/// What a claimed task of some kind needs before it runs.
pub(super) enum Admission {
    /// Its kind is not capped: a slot only.
    Free,
    /// Its class had a permit: held while it runs.
    Admitted(ClassPermit),
    /// Its class has none left: wait for one on this semaphore.
    Wait(Arc<Semaphore>),
}

/// A permit of a capped class; dropping it (the task ended) wakes the claiming loop.
pub(super) struct ClassPermit {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl ClassPermit {
    pub(super) fn new(permit: OwnedSemaphorePermit, freed: Arc<Notify>) -> ClassPermit {
        ClassPermit {
            permit: Some(permit),
            freed,
        }
    }
}

impl Drop for ClassPermit {
    fn drop(&mut self) {
        // The permit first: the loop woken must find it back.
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

impl Caps {
    pub(super) fn new(config: &ProcessorConfig) -> Caps {
        let classes = KindClass::ALL
            .iter()
            .map(|&class| (class, config.class_cap(class)))
            .filter(|&(_, cap)| cap < config.concurrency)
            .map(|(class, cap)| ClassCap {
                class,
                kinds: class.kinds(),
                permits: Arc::new(Semaphore::new(cap)),
            })
            .collect();
        Caps {
            classes,
            freed: Arc::new(Notify::new()),
        }
    }

    /// The caps that bind, by class name, for the start-up log line.
    pub(super) fn describe(&self) -> Vec<(&'static str, usize)> {
        self.classes
            .iter()
            .map(|c| (c.class.name(), c.permits.available_permits()))
            .collect()
    }

    /// The kinds the next claim must leave pending: those of every class with no permit
    /// left. Empty (no allocation) while every class has room, i.e. nearly always.
    pub(super) fn full_kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        for class in &self.classes {
            if class.permits.available_permits() == 0 {
                kinds.extend_from_slice(&class.kinds);
            }
        }
        kinds
    }

    /// What a claimed task of `kind` needs before it runs.
    pub(super) fn admit(&self, kind: &str) -> Admission {
        let Some(class) = TaskKind::parse(kind).and_then(TaskKind::class) else {
            return Admission::Free;
        };
        let Some(cap) = self.classes.iter().find(|c| c.class == class) else {
            return Admission::Free;
        };
        match cap.permits.clone().try_acquire_owned() {
            Ok(permit) => Admission::Admitted(ClassPermit::new(permit, self.freed.clone())),
            Err(_) => Admission::Wait(cap.permits.clone()),
        }
    }
}
