//! `--format workload`: the trace turned into the replay's workload, in the workload text
//! format (`refgate-replay/src/workload_file.rs`), for `refgate replay --workload FILE` and
//! for editing into what-ifs. The conversion is the replay's own (default options:
//! handles from the kprobes or the 1 ms gap, `for_cow` by `--seq-rule data`).

use std::io::{Read, Write};

use anyhow::{Result, anyhow};
use refgate_common::event::Record;
use refgate_replay::{
    trace_workload::{TraceOptions, workload_from_records},
    workload_file,
};

use super::{Exported, Source};

pub fn write<R: Read, W: Write>(src: &mut Source<R>, mut out: W) -> Result<Exported> {
    let records: Vec<Record> = src.reader.by_ref().collect();
    let events = records
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .count() as u64;
    let (w, _) = workload_from_records(records, &TraceOptions::default())
        .map_err(|e| anyhow!("the trace cannot be turned into a workload: {e}"))?;
    let text = workload_file::to_text(&w);
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(Exported {
        events,
        entries: text.lines().count() as u64,
    })
}
