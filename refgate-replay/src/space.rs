//! Modern space reservation for delayed refs (spec §4.6, §4.7), as far as it decides who
//! runs delayed refs and when: `delayed_refs_rsv` grows by `btrfs_calc_delayed_ref_bytes(1)`
//! per queued ref and shrinks as refs run; a writer whose reservation does not fit waits on
//! a FIFO ticket; the async metadata reclaim worker runs `FLUSH_DELAYED_REFS_NR` (then
//! `FLUSH_DELAYED_REFS`) for the tickets; the preemptive reclaim worker runs
//! `FLUSH_DELAYED_REFS_NR` with ¼ of the reservation once it fills half the pool. The
//! commit's exclusive phase waits until no worker is inside a joined transaction.
//!
//! Approximated (README, "What the model approximates"): one pool of `metadata_pool_bytes`
//! stands for the free metadata space and the global reserve (the recorded filesystem's
//! size is not in the trace); every add-API call that queues a ref reserves one ref's bytes
//! (the kernel reserves per transaction item at `start_transaction`); extent ops reserve
//! nothing; the flush states other than the two delayed-ref ones (delayed items, chunk
//! allocation, commit) are not modelled.

use crate::waitqueue::WaitQueue;
use parking_lot::Mutex;
use std::collections::VecDeque;

#[derive(Debug, Default)]
struct State {
    /// Bytes not reserved.
    free: u64,
    /// `delayed_refs_rsv.size`: reserved plus waiting.
    size: u64,
    /// `delayed_refs_rsv.reserved`.
    reserved: u64,
    /// Waiting writers: (ticket, bytes), FIFO.
    tickets: VecDeque<(u64, u64)>,
    next_ticket: u64,
    /// Tickets granted since their owner last looked.
    granted: Vec<u64>,
    /// The preemptive worker has been asked to run.
    preempt_pending: bool,
    /// Workers inside `btrfs_join_transaction_nostart`.
    joined: u32,
    /// A commit's exclusive phase is on: no join.
    commit_blocking: bool,
    /// The replay is over: workers leave.
    shutdown: bool,
}

/// `fs_info->delayed_refs_rsv` and the metadata space behind it.
pub struct DelayedRefsRsv {
    pool: u64,
    st: Mutex<State>,
    tickets_wq: WaitQueue,
    async_wq: WaitQueue,
    preempt_wq: WaitQueue,
    join_wq: WaitQueue,
}

/// What a reclaim worker should do next.
pub enum Flush {
    /// Run refs releasing at least this many bytes (`FLUSH_DELAYED_REFS_NR`).
    Bytes(u64),
    /// The replay is over.
    Stop,
}

impl DelayedRefsRsv {
    pub fn new(pool: u64) -> Self {
        Self {
            pool,
            st: Mutex::new(State {
                free: pool,
                ..State::default()
            }),
            tickets_wq: WaitQueue::new(),
            async_wq: WaitQueue::new(),
            preempt_wq: WaitQueue::new(),
            join_wq: WaitQueue::new(),
        }
    }

    /// A writer reserves `bytes` for a ref it is about to queue, waiting on a ticket when
    /// they do not fit (or others already wait: tickets are served in order). Returns
    /// whether it had to wait.
    pub fn reserve(&self, bytes: u64) -> bool {
        let (ticket, preempt) = {
            let mut s = self.st.lock();
            s.size += bytes;
            if s.tickets.is_empty() && s.free >= bytes {
                s.free -= bytes;
                s.reserved += bytes;
                let preempt = !s.preempt_pending && s.reserved > self.pool / 2;
                s.preempt_pending |= preempt;
                (None, preempt)
            } else {
                s.next_ticket += 1;
                let t = s.next_ticket;
                s.tickets.push_back((t, bytes));
                (Some(t), false)
            }
        };
        if preempt {
            self.preempt_wq.wake_all();
        }
        let Some(t) = ticket else {
            return false;
        };
        self.async_wq.wake_all();
        // Also released by a shutdown (a failed worker must not strand the writers).
        self.tickets_wq.wait_until(|| {
            let mut s = self.st.lock();
            match s.granted.iter().position(|&g| g == t) {
                Some(i) => {
                    s.granted.swap_remove(i);
                    true
                }
                None => s.shutdown,
            }
        });
        true
    }

    /// Refs ran (or left the queue) and give back `bytes`; waiting tickets are granted in
    /// order while they fit.
    pub fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let granted = {
            let mut s = self.st.lock();
            let b = bytes.min(s.reserved);
            s.reserved -= b;
            s.size -= b;
            s.free += b;
            let mut any = false;
            while let Some(&(t, need)) = s.tickets.front() {
                if s.free < need {
                    break;
                }
                s.tickets.pop_front();
                s.free -= need;
                s.reserved += need;
                s.granted.push(t);
                any = true;
            }
            any
        };
        if granted {
            self.tickets_wq.wake_all();
        }
    }

    /// Bytes waiting on tickets (0: nobody waits).
    pub fn waiting(&self) -> u64 {
        self.st.lock().tickets.iter().map(|(_, b)| b).sum()
    }

    pub fn reserved(&self) -> u64 {
        self.st.lock().reserved
    }

    /// The async reclaim worker's next step: sleep until tickets wait, then flush for them.
    pub fn next_async_flush(&self) -> Flush {
        self.async_wq.wait_until(|| {
            let s = self.st.lock();
            s.shutdown || !s.tickets.is_empty()
        });
        let s = self.st.lock();
        if s.shutdown {
            Flush::Stop
        } else {
            Flush::Bytes(s.tickets.iter().map(|(_, b)| b).sum())
        }
    }

    /// The preemptive reclaim worker's next step: sleep until asked, then reclaim a
    /// quarter of the reservation (§4.7).
    pub fn next_preemptive_flush(&self) -> Flush {
        self.preempt_wq.wait_until(|| {
            let s = self.st.lock();
            s.shutdown || s.preempt_pending
        });
        let mut s = self.st.lock();
        if s.shutdown {
            return Flush::Stop;
        }
        s.preempt_pending = false;
        Flush::Bytes((s.reserved / 4).max(1))
    }

    /// `btrfs_join_transaction_nostart`: false while a commit's exclusive phase runs (the
    /// worker then waits for it to end and tries again).
    pub fn join(&self) -> bool {
        let mut s = self.st.lock();
        if s.commit_blocking {
            return false;
        }
        s.joined += 1;
        true
    }

    /// The worker ends its joined transaction.
    pub fn leave(&self) {
        self.st.lock().joined -= 1;
        self.join_wq.wake_all();
    }

    /// Sleeps until a commit's exclusive phase is over.
    pub fn wait_commit(&self) {
        self.join_wq.wait_until(|| {
            let s = self.st.lock();
            !s.commit_blocking || s.shutdown
        });
    }

    /// The commit's exclusive phase starts: no new joins, and wait for joined workers to
    /// leave (the kernel's wait for `num_writers == 1`).
    pub fn block_joins(&self) {
        self.st.lock().commit_blocking = true;
        self.join_wq.wait_until(|| self.st.lock().joined == 0);
    }

    pub fn unblock_joins(&self) {
        self.st.lock().commit_blocking = false;
        self.join_wq.wake_all();
    }

    /// The workload is done: wake the workers so they leave.
    pub fn shutdown(&self) {
        self.st.lock().shutdown = true;
        self.tickets_wq.wake_all();
        self.async_wq.wake_all();
        self.preempt_wq.wake_all();
        self.join_wq.wake_all();
    }
}
