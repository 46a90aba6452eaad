//! Signed-in WebSockets per account, bounded.
//!
//! A full house may close a socket nobody signed in on (`server::SocketSlot`), never a
//! signed-in one. Anyone can sign up and get a manager account, so without a bound one
//! account, from 16 addresses of 256 sockets, could hold every one of the 4,096 slots
//! with sockets no full house may close. A `connection_init` beyond
//! [`ApiConfig::max_sockets_per_account`](crate::config::ApiConfig) is refused
//! (`FORBIDDEN`, `TOO_MANY_SOCKETS`: graphql-transport-ws closes `4403`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::error::ApiError;

/// Open signed-in sockets, by account.
#[derive(Default)]
pub(crate) struct AccountSockets {
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One signed-in socket of an account: counted until dropped (with the socket's
/// connection data, when the socket and its operations have ended).
pub(crate) struct AccountSocket {
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
    account: Uuid,
}

impl AccountSockets {
    /// Counts a socket of `account`, unless it already has `max` open.
    pub(crate) fn open(&self, account: Uuid, max: usize) -> Result<AccountSocket, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let sockets = open.entry(account).or_default();
        if *sockets >= max {
            return Err(ApiError::forbidden(
                "TOO_MANY_SOCKETS",
                format!("an account may have at most {max} sockets open; close one first"),
            ));
        }
        *sockets += 1;
        Ok(AccountSocket {
            open: self.open.clone(),
            account,
        })
    }
}

impl Drop for AccountSocket {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sockets) = open.get_mut(&self.account) {
            *sockets -= 1;
            if *sockets == 0 {
                open.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_opens_at_most_max_and_a_closed_one_makes_room() {
        let sockets = AccountSockets::default();
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        let first = sockets.open(me, 2).unwrap();
        let _second = sockets.open(me, 2).unwrap();
        assert!(sockets.open(me, 2).is_err());
        let _others = sockets.open(other, 2).unwrap();
        drop(first);
        assert!(sockets.open(me, 2).is_ok());
    }
}
