//! `refgate inspect`: a summary of a trace file.
use std::path::Path;

use anyhow::Result;
use refgate_common::trace::TraceReader;

pub fn run(path: &Path, json: bool) -> Result<()> {
    let mut reader = TraceReader::open_path(path)?;
    let records = reader.by_ref().count();
    let h = reader.header().clone();
    if json {
        println!("{}", serde_json::json!({"kernel_release": h.kernel_release, "records": records}));
    } else {
        println!("{} records, kernel {}", records, h.kernel_release);
    }
    if let Some(e) = reader.damage_error() {
        eprintln!("refgate: {e}");
    }
    Ok(())
}
