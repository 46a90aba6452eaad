//! Support of the root integration tests: a Chrome DevTools Protocol client
//! ([`cdp`]) and a loopback SMTP acceptor ([`smtp`]).
#![allow(dead_code)]

pub mod cdp;
pub mod smtp;
