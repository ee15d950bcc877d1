//! The built-in IPAM: pure allocation logic ([`allocator`]) over host-local's
//! on-disk layout ([`store`]), so existing tooling still reads it.

pub mod allocator;
pub mod store;

pub use allocator::{AllocError, Pool};
pub use store::{Reservation, Store, StoreError};
