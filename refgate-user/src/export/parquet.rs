//! `refgate export --format parquet`: the events as one Parquet table, one row per event, for
//! DuckDB, Spark or Trino over the traces of a fleet.
//!
//! # One wide table, not a table per event kind
//!
//! The rows are the JSONL rows ([`super::Row`]) plus `host`, `kernel_release` and `fsid`: every
//! decoded field of every kind is a nullable column, null where a kind has no such field. That
//! is what a DuckDB user wants here:
//!
//! * **one file per trace, one schema for all**: a Parquet file holds one table, so a table per
//!   kind would be thirteen files per trace to glob and union by hand; with one schema,
//!   `read_parquet('traces/*.parquet')` (or one Spark/Trino external table over a directory)
//!   takes every host's traces at once, and adding an event kind later only adds columns;
//! * **queries across kinds stay simple**: "what did this task do around this lock wait",
//!   "adds vs runs per second", "lock waits per host and kernel" are a `WHERE`/`GROUP BY` on
//!   one table, not a union of per-kind tables with different columns;
//! * **nulls are nearly free**: a column is stored per row group with definition levels,
//!   run-length encoded, so a column that is null for most rows costs a few bytes per page;
//!   constant columns (`host`, `kernel_release`) and the repetitive strings (`kind`, `probe`,
//!   `comm`, `role`) are dictionary-encoded.
//!
//! Column types are the plain ones every engine reads the same way: `BIGINT` (INT64) for the
//! kernel's 64-bit fields, `INTEGER` (INT32) for the narrower ones, `BOOLEAN`, `VARCHAR`
//! (UTF-8). No unsigned annotations: Spark and Trino would read an unsigned 64-bit column as
//! `DECIMAL(20,0)`. A `u64` above 2^63 therefore reads negative — in practice only the objectids
//! of btrfs' special trees (`BTRFS_TREE_RELOC_OBJECTID` is `-8ULL`, read as -8, which is how
//! btrfs itself defines it). `lock_addr` and `handle` (per-trace identifiers, or kernel addresses
//! in a trace recorded with `--keep-kernel-pointers`) are hex strings, as in the JSONL. `ts_ns` is CLOCK_MONOTONIC of the recording host, not wall-clock time: compare it
//! within one trace (the header, with the wall-clock start, is in the footer, below).
//!
//! The file's key-value metadata holds `refgate` = the trace's header, filesystems and last
//! statistics as JSON (DuckDB: `SELECT * FROM parquet_kv_metadata('t.parquet')`). Row groups of
//! [`ROW_GROUP_ROWS`] rows keep memory bounded; pages are Snappy-compressed, which every one of
//! those engines reads (the `snap` crate is pure Rust; zstd would need a C build).
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::{Row, Source};

/// Rows per row group: ~50 MB of column buffers at most, and units DuckDB reads in parallel.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Physical type of a column.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    I32,
    I64,
    Bool,
    Str,
}

/// A column's value in one row (`None`: null).
enum V<'a> {
    I32(Option<i32>),
    I64(Option<i64>),
    Bool(Option<bool>),
    Str(Option<&'a str>),
}

/// What a row is made of: the event's row and the per-trace columns.
struct Ctx<'a> {
    row: &'a Row<'a>,
    /// The recorded hostname; `None` where the kernel had none (`(none)`) or it is empty.
    host: Option<&'a str>,
    kernel: &'a str,
    fsid: Option<&'a str>,
    lock_addr: Option<&'a str>,
    handle: Option<&'a str>,
}

struct Spec {
    name: &'static str,
    ty: Ty,
    required: bool,
    get: for<'a> fn(&Ctx<'a>) -> V<'a>,
}

fn i64o(v: Option<u64>) -> V<'static> {
    // Bit-cast: see the module documentation.
    V::I64(v.map(|v| v as i64))
}

fn i32o(v: Option<u32>) -> V<'static> {
    V::I32(v.map(|v| v as i32))
}

/// The columns, in order. The schema is generated from this list.
#[rustfmt::skip]
const COLUMNS: &[Spec] = &[
    Spec { name: "host", ty: Ty::Str, required: false, get: |c| V::Str(c.host) },
    Spec { name: "kernel_release", ty: Ty::Str, required: true, get: |c| V::Str(Some(c.kernel)) },
    Spec { name: "ts_ns", ty: Ty::I64, required: true, get: |c| i64o(Some(c.row.ts_ns)) },
    Spec { name: "cpu", ty: Ty::I32, required: true, get: |c| i32o(Some(c.row.cpu)) },
    Spec { name: "tid", ty: Ty::I32, required: true, get: |c| i32o(Some(c.row.tid)) },
    Spec { name: "tgid", ty: Ty::I32, required: false, get: |c| i32o(c.row.tgid) },
    Spec { name: "comm", ty: Ty::Str, required: false, get: |c| V::Str(c.row.comm) },
    Spec { name: "kind", ty: Ty::Str, required: true, get: |c| V::Str(Some(c.row.kind)) },
    Spec { name: "probe", ty: Ty::Str, required: true, get: |c| V::Str(Some(c.row.probe)) },
    Spec { name: "fs", ty: Ty::I32, required: false, get: |c| i32o(c.row.fields.fs.map(u32::from)) },
    Spec { name: "fsid", ty: Ty::Str, required: false, get: |c| V::Str(c.fsid) },
    Spec { name: "bytenr", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.bytenr) },
    Spec { name: "num_bytes", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.num_bytes) },
    Spec { name: "action", ty: Ty::I32, required: false, get: |c| i32o(c.row.fields.action.map(u32::from)) },
    Spec { name: "action_name", ty: Ty::Str, required: false, get: |c| V::Str(c.row.fields.action_name) },
    Spec { name: "parent", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.parent) },
    Spec { name: "ref_root", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.ref_root) },
    Spec { name: "level", ty: Ty::I32, required: false, get: |c| i32o(c.row.fields.level.map(u32::from)) },
    Spec { name: "owner", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.owner) },
    Spec { name: "data_offset", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.data_offset) },
    Spec { name: "ref_type", ty: Ty::I32, required: false, get: |c| i32o(c.row.fields.ref_type.map(u32::from)) },
    Spec { name: "ref_type_name", ty: Ty::Str, required: false, get: |c| V::Str(c.row.fields.ref_type_name) },
    Spec { name: "seq", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.seq) },
    Spec { name: "is_data", ty: Ty::Bool, required: false, get: |c| V::Bool(c.row.fields.is_data) },
    Spec { name: "generation", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.generation) },
    Spec { name: "root_objectid", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.root_objectid) },
    Spec { name: "block", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.block) },
    Spec { name: "wait_ns", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.wait_ns) },
    Spec { name: "is_log_tree", ty: Ty::Bool, required: false, get: |c| V::Bool(c.row.fields.is_log_tree) },
    Spec { name: "role", ty: Ty::Str, required: false, get: |c| V::Str(c.row.fields.role) },
    Spec { name: "lock_addr", ty: Ty::Str, required: false, get: |c| V::Str(c.lock_addr) },
    Spec { name: "flags", ty: Ty::I32, required: false, get: |c| i32o(c.row.fields.flags) },
    Spec { name: "ret", ty: Ty::I64, required: false, get: |c| V::I64(c.row.fields.ret) },
    Spec { name: "arg", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.arg) },
    Spec { name: "run_all", ty: Ty::Bool, required: false, get: |c| V::Bool(c.row.fields.run_all) },
    Spec { name: "duration_ns", ty: Ty::I64, required: false, get: |c| i64o(c.row.fields.duration_ns) },
    Spec { name: "handle", ty: Ty::Str, required: false, get: |c| V::Str(c.handle) },
];

/// The `host` column: the recorded hostname, or NULL for the kernel's "no name" (`(none)`,
/// its default nodename) and an empty one, which are not hosts called so.
fn host_column(h: &str) -> Option<&str> {
    (!h.is_empty() && h != "(none)").then_some(h)
}

/// The Parquet schema of [`COLUMNS`], in the message-type syntax.
pub fn schema_text() -> String {
    let mut s = String::from("message refgate_event {\n");
    for c in COLUMNS {
        let rep = if c.required { "REQUIRED" } else { "OPTIONAL" };
        let ty = match c.ty {
            Ty::I32 => "INT32",
            Ty::I64 => "INT64",
            Ty::Bool => "BOOLEAN",
            Ty::Str => "BYTE_ARRAY",
        };
        let logical = if c.ty == Ty::Str { " (STRING)" } else { "" };
        s.push_str(&format!("  {rep} {ty} {}{logical};\n", c.name));
    }
    s.push('}');
    s
}

/// One column's buffered values for the current row group.
#[derive(Default)]
struct Buf {
    i32s: Vec<i32>,
    i64s: Vec<i64>,
    bools: Vec<bool>,
    strs: Vec<ByteArray>,
    /// Definition levels (1: present, 0: null); only for optional columns.
    def: Vec<i16>,
    /// Each distinct string once, shared by its rows.
    interned: HashMap<String, ByteArray>,
}

impl Buf {
    fn push(&mut self, v: V<'_>, required: bool) {
        let present = match v {
            V::I32(x) => x.map(|x| self.i32s.push(x)).is_some(),
            V::I64(x) => x.map(|x| self.i64s.push(x)).is_some(),
            V::Bool(x) => x.map(|x| self.bools.push(x)).is_some(),
            V::Str(x) => x
                .map(|x| {
                    let b = match self.interned.get(x) {
                        Some(b) => b.clone(),
                        None => {
                            let b = ByteArray::from(x);
                            self.interned.insert(x.to_string(), b.clone());
                            b
                        }
                    };
                    self.strs.push(b)
                })
                .is_some(),
        };
        if !required {
            self.def.push(i16::from(present));
        }
    }

    fn clear(&mut self) {
        self.i32s.clear();
        self.i64s.clear();
        self.bools.clear();
        self.strs.clear();
        self.def.clear();
    }
}

struct Table<W: Write + Send> {
    w: SerializedFileWriter<W>,
    bufs: Vec<Buf>,
    rows: usize,
}

impl<W: Write + Send> Table<W> {
    fn push(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        for (spec, buf) in COLUMNS.iter().zip(&mut self.bufs) {
            buf.push((spec.get)(ctx), spec.required);
        }
        self.rows += 1;
        if self.rows >= ROW_GROUP_ROWS {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut rg = self.w.next_row_group()?;
        for (spec, buf) in COLUMNS.iter().zip(&mut self.bufs) {
            let Some(mut cw) = rg.next_column()? else {
                bail!("the Parquet writer has fewer columns than the schema (a refgate bug)");
            };
            let def = (!spec.required).then_some(buf.def.as_slice());
            match spec.ty {
                Ty::I32 => cw.typed::<Int32Type>().write_batch(&buf.i32s, def, None)?,
                Ty::I64 => cw.typed::<Int64Type>().write_batch(&buf.i64s, def, None)?,
                Ty::Bool => cw.typed::<BoolType>().write_batch(&buf.bools, def, None)?,
                Ty::Str => cw
                    .typed::<ByteArrayType>()
                    .write_batch(&buf.strs, def, None)?,
            };
            cw.close()?;
            buf.clear();
        }
        rg.close()?;
        self.rows = 0;
        Ok(())
    }
}

pub fn write<R: Read, W: Write + Send>(src: &mut Source<R>, out: W) -> Result<super::Exported> {
    write_inner(src, out).context("cannot write the Parquet file")
}

fn write_inner<R: Read, W: Write + Send>(src: &mut Source<R>, out: W) -> Result<super::Exported> {
    let schema = Arc::new(parse_message_type(&schema_text())?);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut table = Table {
        w: SerializedFileWriter::new(out, schema, Arc::new(props))?,
        bufs: COLUMNS.iter().map(|_| Buf::default()).collect(),
        rows: 0,
    };
    let host = host_column(&src.header().hostname).map(str::to_string);
    let kernel = src.header().kernel_release.clone();
    let mut n = 0u64;
    while let Some(e) = src.next_event() {
        let row = Row::new(&e, src.tasks.get(&e.tid));
        let hex = |h: Option<super::Hex>| h.map(|h| format!("{:#x}", h.0));
        let (lock_addr, handle) = (hex(row.fields.lock_addr), hex(row.fields.handle));
        let ctx = Ctx {
            row: &row,
            host: host.as_deref(),
            kernel: &kernel,
            fsid: row.fields.fs.and_then(|fs| src.fsid(fs)),
            lock_addr: lock_addr.as_deref(),
            handle: handle.as_deref(),
        };
        table.push(&ctx)?;
        n += 1;
    }
    table.flush_group()?;
    let mut w = table.w;
    w.append_key_value_metadata(KeyValue::new(
        "refgate".to_string(),
        src.metadata_json().to_string(),
    ));
    let mut out = w.into_inner()?;
    out.flush()?;
    Ok(super::Exported {
        events: n,
        entries: n,
    })
}

#[cfg(test)]
mod tests {
    /// Every column name can be used in SQL unquoted (DuckDB, Spark and Trino reserve these;
    /// `offset` was one) and no column holds the kernel's "no name" as a host.
    #[test]
    fn columns_need_no_quoting_and_unknown_hosts_are_null() {
        const RESERVED: &[&str] = &[
            "all", "and", "as", "by", "case", "cast", "check", "column", "create", "default",
            "desc", "distinct", "else", "end", "from", "group", "having", "in", "into", "is",
            "join", "limit", "not", "null", "offset", "on", "or", "order", "select", "table",
            "then", "to", "union", "user", "using", "when", "where", "window", "with",
        ];
        for c in COLUMNS {
            assert!(!RESERVED.contains(&c.name), "{} is reserved in SQL", c.name);
        }
        assert_eq!(host_column("(none)"), None);
        assert_eq!(host_column(""), None);
        assert_eq!(host_column("vm"), Some("vm"));
    }

    use super::super::Format;
    use super::super::tests::{SMALL_EVENTS, export_small};
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    #[test]
    fn schema_parses_and_names_every_row_field() {
        let schema = parse_message_type(&schema_text()).unwrap();
        assert_eq!(schema.get_fields().len(), COLUMNS.len());
        // Every field a JSON row can have is a column.
        let row = serde_json::to_value(super::super::Fields {
            fs: Some(0),
            bytenr: Some(0),
            num_bytes: Some(0),
            action: Some(0),
            action_name: Some(""),
            parent: Some(0),
            ref_root: Some(0),
            level: Some(0),
            owner: Some(0),
            data_offset: Some(0),
            ref_type: Some(0),
            ref_type_name: Some(""),
            seq: Some(0),
            is_data: Some(false),
            generation: Some(0),
            root_objectid: Some(0),
            block: Some(0),
            wait_ns: Some(0),
            is_log_tree: Some(false),
            role: Some(""),
            lock_addr: Some(super::super::Hex(0)),
            flags: Some(0),
            ret: Some(0),
            arg: Some(0),
            run_all: Some(false),
            duration_ns: Some(0),
            handle: Some(super::super::Hex(0)),
        })
        .unwrap();
        for k in row.as_object().unwrap().keys() {
            assert!(COLUMNS.iter().any(|c| c.name == k), "no column {k}");
        }
    }

    #[test]
    fn round_trip_rows_and_values() {
        let (r, out) = export_small(Format::Parquet, true, false).unwrap();
        assert_eq!(r.events, SMALL_EVENTS);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&out).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.num_rows() as u64, SMALL_EVENTS);
        let kv = meta.key_value_metadata().unwrap();
        let refgate = kv.iter().find(|k| k.key == "refgate").unwrap();
        let v: serde_json::Value = serde_json::from_str(refgate.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["header"]["hostname"], "testhost");

        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let get = |i: usize, name: &str| -> Field {
            rows[i]
                .get_column_iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, f)| f.clone())
                .unwrap()
        };
        assert_eq!(get(0, "kind"), Field::Str("start_transaction".into()));
        assert_eq!(get(0, "handle"), Field::Str("0xfffffffffffffff8".into()));
        assert_eq!(get(0, "bytenr"), Field::Null);
        assert_eq!(get(0, "host"), Field::Str("testhost".into()));
        assert_eq!(get(1, "bytenr"), Field::Long(1 << 20));
        assert_eq!(get(1, "fsid"), Field::Str("ab".repeat(16)));
        assert_eq!(get(1, "comm"), Field::Str("writer".into()));
        let contention = rows
            .iter()
            .position(|r| {
                r.get_column_iter()
                    .any(|(_, f)| *f == Field::Str("head_mutex".into()))
            })
            .unwrap();
        assert_eq!(
            get(contention, "lock_addr"),
            Field::Str("0xffff888100001000".into())
        );
        assert_eq!(get(contention, "wait_ns"), Field::Long(50_000));
        let commit = rows
            .iter()
            .position(|r| {
                r.get_column_iter()
                    .any(|(_, f)| *f == Field::Str("btrfs_commit_transaction".into()))
            })
            .unwrap();
        assert_eq!(get(commit, "ret"), Field::Long(-28));
    }
}
