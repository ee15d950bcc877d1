//! A container root filesystem made from Debian's busybox-static, since no
//! image can be pulled here.

use std::path::{Path, PathBuf};

pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{BUSYBOX} not found: install busybox-static (scripts/setup.sh)")]
    NoBusybox,
    #[error("{BUSYBOX} is not statically linked (install busybox-static, not busybox)")]
    NotStatic,
    #[error("building the rootfs at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Applets the tests use; each becomes a symlink to /bin/busybox.
pub const APPLETS: &[&str] = &[
    "sh", "ping", "ip", "sleep", "cat", "wget", "httpd", "nc", "echo", "mkdir", "ls",
];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a 64-bit little-endian ELF image asks for a dynamic loader
/// (has a PT_INTERP program header). Anything else counts as no.
pub fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| u32_at(off + i * phentsize))
            == Some(PT_INTERP)
    })
}

/// Fills `dir` with /bin/busybox, applet symlinks and the empty directories a
/// runtime mounts over (/proc, /sys, /dev, /etc, /tmp).
pub fn busybox_rootfs(dir: &Path) -> Result<(), RootfsError> {
    let data = std::fs::read(BUSYBOX).map_err(|_| RootfsError::NoBusybox)?;
    // A dynamic busybox would need the host's libc inside the container.
    if has_interpreter(&data) {
        return Err(RootfsError::NotStatic);
    }
    let bin = dir.join("bin");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "www"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let target = bin.join("busybox");
    std::fs::write(&target, &data).map_err(io(&target))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&target))?;
    for applet in APPLETS {
        let link = bin.join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(io(&link))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_detection() {
        // /bin/sh on Debian is dash, dynamically linked.
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(has_interpreter(&sh));
        assert!(!has_interpreter(b"not an elf"));
        assert!(!has_interpreter(&[0x7f, b'E', b'L', b'F', 2, 1]));
    }

    #[test]
    fn rootfs_has_busybox_and_applets() {
        let dir = testkit::temp::temp_dir("rootfs-unit").unwrap();
        busybox_rootfs(dir.path()).unwrap();
        let bb = std::fs::read(dir.path().join("bin/busybox")).unwrap();
        assert!(!has_interpreter(&bb), "busybox must be static");
        let link = std::fs::read_link(dir.path().join("bin/ping")).unwrap();
        assert_eq!(link, Path::new("busybox"));
    }
}
