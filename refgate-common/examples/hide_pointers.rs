//! `cargo run -p refgate-common --features std --example hide_pointers -- IN OUT`: copies a
//! trace with its kernel pointers (lock addresses, transaction handles) replaced by per-trace
//! identifiers, for traces recorded before `refgate record` did that itself (or with
//! `--keep-kernel-pointers`). The bundled samples were converted with it.
use std::{fs::File, io::BufWriter, process::ExitCode};

use refgate_common::trace::{TraceReader, pointers::hide_pointers};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = &args[..] else {
        eprintln!("usage: hide_pointers IN OUT");
        return ExitCode::FAILURE;
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let reader = TraceReader::open_path(input)?;
        let tmp = format!("{output}.tmp");
        let (w, damage) = hide_pointers(reader, BufWriter::new(File::create(&tmp)?))?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, output)?;
        if let Some(d) = damage {
            eprintln!("note: {input}: {d}; the copy holds what precedes it");
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hide_pointers: {e}");
            ExitCode::FAILURE
        }
    }
}
