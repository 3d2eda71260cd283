//! # mc-rdma: the data plane of mc-master
//!
//! Upstream Mooncake's Transfer Engine (TE) wire protocols, sans-IO: see [`te`].
#![warn(missing_docs)]

pub mod te;
