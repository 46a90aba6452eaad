//! A shutdown signal that many tasks can wait on and that tests can trigger.

use tokio::sync::watch;

/// The sending side: call [`ShutdownTrigger::trigger`] once to stop every listener.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(std::sync::Arc<watch::Sender<bool>>);

/// The receiving side, cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(std::sync::Arc::new(tx)), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        // send_replace never fails, even with no receiver left.
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A signal that never fires (for one-off tools).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `changed()` never errors out early.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the trigger fires (or its sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
