//! The kernel model (being written).
