//! `refgate inspect`: a summary of a trace file (refgate_common::trace::summary does the work).
use std::path::Path;

use anyhow::Result;
use refgate_common::trace::{
    TraceReader,
    summary::{render_text, summarize},
};

pub fn run(path: &Path, json: bool) -> Result<()> {
    let summary = summarize(TraceReader::open_path(path)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_text(&summary));
    }
    // A damaged file is still summarised up to the damage; say so on stderr as well.
    if let Some(msg) = &summary.damage_message {
        eprintln!("refgate: {msg}");
    }
    Ok(())
}
