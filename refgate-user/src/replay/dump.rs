//! `--dump-state FILE`: the final extent tree and the model's counts as JSON.

use anyhow::Result;
use refgate_replay::Report;
use serde_json::json;

/// `--dump-state`: the final extent tree and the model's counts as JSON.
pub fn write_dump(path: &std::path::Path, r: &Report) -> Result<()> {
    let v = json!({
        "schema": "refgate.state/1",
        "policy": r.policy,
        "kernels": r.kernels,
        "gated": r.gated,
        "engine": r.engine.name(),
        "cpus": r.threads,
        "final_state": r.final_state,
        "counts": {
            "adds": r.adds,
            "refs_run": r.refs_run,
            "heads_run": r.heads_run,
            "extent_ops_run": r.extent_ops_run,
            "insert_cancels": r.insert_cancels,
            "run_merges": r.run_merges,
            "seq_holdbacks": r.seq_holdbacks,
            "head_eagain": r.head_eagain,
            "space_waits": r.space_waits,
            "gate": r.gate,
            "run_calls_by_caller": r.run_calls_by_caller,
            "refs_run_by_caller": r.refs_run_by_caller,
        },
    });
    // Private like the trace it comes from, the invoking user's under sudo (crate::owner);
    // whole or not at all.
    crate::owner::write_private_atomically(path, "the state dump", |w| {
        std::io::Write::write_all(w, (serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
        Ok(())
    })
}
