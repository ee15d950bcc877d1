//! Synchronous rtnetlink: a blocking socket that sends batches of requests
//! in one datagram ([`socket`]), the request builders ([`messages`]) and
//! what we read back from replies ([`parse`]).

pub mod messages;
pub mod parse;
pub mod socket;

pub use socket::{Netlink, NetlinkError, Request};
