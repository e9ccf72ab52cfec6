//! The contract between refgate's halves.
//!
//! * [`raw`] (always, `no_std`): the fixed-layout records the eBPF programs write into the ring
//!   buffer, and the keys/values of the maps both sides touch.
//! * [`names`] (always): one name per thing — lock roles, probe kinds, callers, states,
//!   counters — for every output.
//! * [`event`] and [`trace`] (feature `std`): the decoded event model and the `trace.bin` file
//!   format (header, framed records), which is the contract between `record` and `replay`.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod names;
pub mod raw;

#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod trace;
