//! tracefs: find or mount it, and read tracepoint record layouts from `format` files, so that
//! no field offset is baked in for one kernel (docs/design.md "Recording").
use std::{collections::HashMap, fs, path::PathBuf};

use anyhow::{Context, Result, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting it on `/sys/kernel/tracing` when it is missing
/// (platform.md: this machine boots without it).
pub fn ensure_mounted() -> Result<PathBuf> {
    for c in CANDIDATES {
        let p = PathBuf::from(c);
        if p.join("events").is_dir() {
            return Ok(p);
        }
    }
    let target = PathBuf::from(CANDIDATES[0]);
    let ok = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && target.join("events").is_dir() {
        log::info!("mounted tracefs on {}", target.display());
        return Ok(target);
    }
    bail!(
        "tracefs is not mounted and mounting it on {} failed. refgate reads tracepoint layouts \
         from tracefs. Mount it yourself (`mount -t tracefs nodev /sys/kernel/tracing`) and run \
         refgate again as root; on a kernel built without CONFIG_TRACING refgate cannot record.",
        target.display()
    )
}

/// One field of a tracepoint record: byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: usize,
    pub size: usize,
}

/// The layout of one tracepoint record, as its `format` file states it.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub fields: HashMap<String, Field>,
}

impl Layout {
    /// Parses the text of a tracefs `format` file.
    pub fn parse(text: &str) -> Layout {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next().unwrap_or("");
            let (mut offset, mut size) = (None, None);
            for p in parts {
                if let Some(v) = p.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            // "u8 fsid[16]" → "fsid"; "void * lock_addr" → "lock_addr".
            let name = decl
                .rsplit([' ', '*'])
                .next()
                .unwrap_or("")
                .split('[')
                .next()
                .unwrap_or("");
            if let (Some(offset), Some(size), false) = (offset, size, name.is_empty()) {
                fields.insert(name.to_string(), Field { offset, size });
            }
        }
        Layout { fields }
    }

    /// Where the record's last field ends: the most a BPF program may read of it (the kernel
    /// checks a tracepoint program's largest context offset against this at attach time).
    pub fn end(&self) -> u32 {
        self.fields
            .values()
            .map(|f| (f.offset + f.size) as u32)
            .max()
            .unwrap_or(0)
    }

    /// Reads `events/<category>/<name>/format` under `tracefs`.
    pub fn read(tracefs: &std::path::Path, category: &str, name: &str) -> Result<Layout> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading the layout of {category}:{name} from {}",
                path.display()
            )
        })?;
        Ok(Layout::parse(&text))
    }

    /// The field `name`, which must be `size` bytes (0: any size) and end within `limit`.
    pub fn field(&self, tp: &str, name: &str, size: usize, limit: usize) -> Result<Field> {
        let f = *self
            .fields
            .get(name)
            .with_context(|| format!("tracepoint {tp} has no field `{name}` on this kernel"))?;
        if size != 0 && f.size != size {
            bail!(
                "tracepoint {tp}: field `{name}` is {} bytes, refgate expects {size}",
                f.size
            );
        }
        if f.offset + f.size > limit {
            bail!(
                "tracepoint {tp}: field `{name}` ends at byte {}, past the {limit} bytes refgate copies",
                f.offset + f.size
            );
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_REF: &str = "name: add_delayed_data_ref
ID: 1994
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:u8 fsid[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:u64 bytenr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int action;\toffset:40;\tsize:4;\tsigned:1;
\tfield:void * lock_addr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:u64 seq;\toffset:88;\tsize:8;\tsigned:0;

print fmt: \"%pU\", REC->fsid
";

    #[test]
    fn parses_format_file_fields() {
        let l = Layout::parse(DATA_REF);
        assert_eq!(
            l.fields["fsid"],
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            l.fields["bytenr"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(
            l.fields["action"],
            Field {
                offset: 40,
                size: 4
            }
        );
        assert_eq!(l.fields["lock_addr"], Field { offset: 8, size: 8 });
        assert_eq!(
            l.fields["seq"],
            Field {
                offset: 88,
                size: 8
            }
        );
        assert!(l.field("t", "seq", 8, 96).is_ok());
        assert!(l.field("t", "seq", 8, 90).is_err(), "past the copied bytes");
        assert!(l.field("t", "action", 8, 96).is_err(), "wrong size");
        assert!(l.field("t", "nope", 8, 96).is_err());
    }
}
