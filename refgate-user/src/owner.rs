//! Files refgate writes: private (0600, like `perf record`'s perf.data: a trace holds the host
//! name, command lines and task names of the traced machine), and, under `sudo`, owned by the
//! user who asked for them rather than by root.
use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::Path,
};

/// The user `sudo` ran refgate for (`SUDO_UID`/`SUDO_GID`), when refgate runs as root on
/// someone else's behalf. `None` when not under sudo, or when that user is root.
pub fn invoking_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.trim().parse().ok()?;
    if uid == 0 {
        return None;
    }
    let gid = std::env::var("SUDO_GID")
        .ok()
        .and_then(|g| g.trim().parse().ok())
        .or_else(|| {
            // The user's primary group, if sudo did not say.
            let pw = unsafe { libc::getpwuid(uid) };
            (!pw.is_null()).then(|| unsafe { (*pw).pw_gid })
        })
        .unwrap_or(uid);
    Some((uid, gid))
}

/// Gives `f` to the invoking user under sudo (see [`invoking_user`]); nothing otherwise.
pub fn give_to_invoking_user(f: &File) -> io::Result<()> {
    if let Some((uid, gid)) = invoking_user()
        && unsafe { libc::fchown(f.as_raw_fd(), uid, gid) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the files at `paths` (not what a symlink there points to) to the invoking user under
/// sudo; nothing otherwise. Best effort: a file that cannot be given stays root's.
pub fn give_paths_to_invoking_user<P: AsRef<Path>>(paths: &[P]) {
    if let Some((uid, gid)) = invoking_user() {
        for p in paths {
            let _ = std::os::unix::fs::lchown(p.as_ref(), Some(uid), Some(gid));
        }
    }
}

/// Creates (or truncates) `path` for writing, mode 0600, owned by the invoking user under sudo.
///
/// As root, refgate does not write through a symlink, and under sudo it takes over an existing
/// file only if it is a plain, singly linked file of the invoking user, or root's old refgate
/// trace: a user allowed to run only `sudo refgate record` must not be able to truncate, and
/// then own, /etc/shadow by passing it (or a link to it) as `-o`.
pub fn create_private(path: &Path) -> io::Result<File> {
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = invoking_user();
    let nofollow = if root { libc::O_NOFOLLOW } else { 0 };
    let explain = |e: io::Error| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::new(
                e.kind(),
                format!(
                    "{} is a symbolic link; refgate running as root does not write through one \
                     (give the real path with -o)",
                    path.display()
                ),
            )
        } else {
            e
        }
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow)
        .open(path)
    {
        Ok(f) => {
            give_to_invoking_user(&f)?;
            return Ok(f);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(explain(e)),
    }
    // An existing file. O_NONBLOCK: opening a FIFO must not hang (no effect on plain files).
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nofollow | if root { libc::O_NONBLOCK } else { 0 })
        .open(path)
        .map_err(explain)?;
    if let Some((uid, _)) = sudo {
        let md = f.metadata()?;
        let ours = md.uid() == uid || (md.uid() == 0 && is_trace(&mut f));
        if !md.file_type().is_file() || md.nlink() > 1 || !ours {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} exists and is neither a plain file of the invoking user nor an old \
                     refgate trace (owner uid {}, {} link(s)); refgate running under sudo will \
                     not overwrite it; remove it or choose another path with -o",
                    path.display(),
                    md.uid(),
                    md.nlink()
                ),
            ));
        }
    }
    f.set_len(0)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    give_to_invoking_user(&f)?;
    Ok(f)
}

/// Whether `f` starts with the trace magic.
/// The private temporary file `path` is written through: `.NAME.tmp-PID` beside it.
pub fn temp_beside(path: &Path) -> Option<std::path::PathBuf> {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name()?);
    name.push(format!(".tmp-{}", std::process::id()));
    Some(path.with_file_name(name))
}

/// Writes `path` private ([`create_private`]) through a temporary file beside it, renamed
/// into place once `write` has succeeded. On any error the temporary file is removed, so a
/// failed write (a full disk) leaves neither a partial file nor the temporary one behind.
/// `what` names the output in errors ("the state dump").
pub fn write_private_atomically<T>(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut io::BufWriter<File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let tmp =
        temp_beside(path).with_context(|| format!("{} is not a file name", path.display()))?;
    let f =
        create_private(&tmp).with_context(|| format!("cannot create {what} {}", path.display()))?;
    let done = (|| {
        let mut w = io::BufWriter::new(f);
        let r = write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(r)
    })();
    done.map_err(|e: anyhow::Error| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("cannot write {what} {}", path.display()))
    })
}

fn is_trace(f: &mut File) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).is_ok() && magic == refgate_common::trace::MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_private_and_an_old_one_is_truncated_and_made_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.bin");
        drop(create_private(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        std::fs::write(&p, b"old contents").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private(&p).unwrap());
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.len(), md.mode() & 0o777), (0, 0o600));
    }
}
