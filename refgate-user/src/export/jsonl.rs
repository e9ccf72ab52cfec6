//! `refgate export --format jsonl`: one flat JSON object per recorded event, one per line, in
//! the trace's order ([`Row`]: `ts_ns`, `cpu`, `tid`, `tgid`, `comm`, `kind`, `probe`, then the
//! event's own fields; a field the event kind does not have is left out). Streams: memory does
//! not grow with the trace.
//!
//! ```sh
//! refgate export trace.bin --format jsonl -o - | jq -r 'select(.kind=="contention_begin/end") | .role' | sort | uniq -c
//! duckdb -c "SELECT kind, count(*) FROM read_json('trace.jsonl') GROUP BY ALL"
//! ```
use std::io::{Read, Write};

use anyhow::{Context, Result};

use super::{Exported, Row, Source};

pub fn write<R: Read, W: Write>(src: &mut Source<R>, mut out: W) -> Result<Exported> {
    let mut n = 0u64;
    while let Some(e) = src.next_event() {
        serde_json::to_writer(&mut out, &Row::new(&e, src.tasks.get(&e.tid)))
            .context("cannot write the JSON lines")?;
        out.write_all(b"\n")
            .context("cannot write the JSON lines")?;
        n += 1;
    }
    out.flush().context("cannot write the JSON lines")?;
    Ok(Exported {
        events: n,
        entries: n,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{SMALL_EVENTS, export_small};

    #[test]
    fn one_object_per_event_in_trace_order() {
        let (r, out) = export_small(Format::Jsonl, true, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len() as u64, SMALL_EVENTS);
        assert_eq!(r.events, SMALL_EVENTS);
        assert!(text.ends_with('\n'));
        assert_eq!(rows[0]["kind"], "start_transaction");
        assert_eq!(rows[0]["probe"], "kretprobe:start_transaction");
        assert_eq!(rows[0]["comm"], "writer");
        assert_eq!(rows[1]["kind"], "add_delayed_tree_ref");
        assert_eq!(rows[1]["bytenr"], 1 << 20);
        assert_eq!(rows[1]["fs"], 0);
        let ts: Vec<u64> = rows.iter().map(|r| r["ts_ns"].as_u64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }
}
