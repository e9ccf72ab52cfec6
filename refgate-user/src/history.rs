//! Bounded histories: the last N samples a dashboard's sparklines draw (record and replay).

use std::collections::VecDeque;

/// Pushes onto a bounded history, dropping the oldest sample when it is full.
pub fn push_bounded<T>(h: &mut VecDeque<T>, v: T, cap: usize) {
    if h.len() == cap {
        h.pop_front();
    }
    h.push_back(v);
}
