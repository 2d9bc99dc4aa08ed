//! Unpacking an upload, which is hostile until proven otherwise: tar (plain or gzip) and zip,
//! read entry by entry and written by us, never by the archive crates. Every entry's path is
//! checked lexically (relative, no `..`, no `\`, UTF-8, bounded) and then created with
//! openat2(2) `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from a directory fd one component at a
//! time, `O_EXCL` for files, so nothing lands outside the target or goes through a link, and
//! an entry that appears twice is refused. Hard links, devices, FIFOs, sockets, sparse files
//! and setuid/setgid bits are refused with the entry named; symlinks must be relative and
//! resolve beneath the target (checked lexically at the entry, and by the kernel once every
//! entry is in place, which also catches chains of links). Entry count, unpacked size and
//! the unpacked/packed ratio are capped as bytes are really written, not as headers claim.
//! Modes are normalised: directories 0755, files 0644, or 0755 with any execute bit, so the
//! sandbox's uid can read everything and nothing is writable but by root.

use std::fs::File;
use std::io::{Cursor, Read, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

/// The caps an upload is held to.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Entries (files, directories, links) at most.
    pub entries: u64,
    /// Bytes of file content at most, unpacked.
    pub bytes: u64,
    /// Unpacked bytes per packed byte at most (beyond a floor of 1 MiB).
    pub ratio: u64,
}

/// What one entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A file; executable or not, and the sha256 of its content.
    File {
        exec: bool,
        sha256: [u8; 32],
    },
    /// A symlink and its target.
    Link(String),
}

/// An unpacked tree, as listed for its digest.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Every entry by its path (`a/b`), sorted once unpacking is done.
    pub entries: Vec<(String, Kind)>,
    /// Content bytes written.
    pub bytes: u64,
}

impl Unpacked {
    /// Files (not directories or links).
    pub fn files(&self) -> u64 {
        self.entries.iter().filter(|(_, k)| matches!(k, Kind::File { .. })).count() as u64
    }

    /// Whether `path` is a top-level file, and whether it is executable.
    pub fn top_file(&self, path: &str) -> Option<bool> {
        self.entries.iter().find_map(|(p, k)| match k {
            Kind::File { exec, .. } if p == path => Some(*exec),
            _ => None,
        })
    }

    /// Feeds the listing into `hasher`: one line per entry in path order, so the digest names
    /// the content and not the archive (its order, times or owners).
    pub fn hash_into(&self, hasher: &mut Sha256) {
        for (path, kind) in &self.entries {
            match kind {
                Kind::Dir => hasher.update(format!("D {path}\n")),
                Kind::File { exec, sha256 } => {
                    hasher.update(format!("F {path} {} {}\n", if *exec { "755" } else { "644" }, hex(sha256)))
                }
                Kind::Link(target) => hasher.update(format!("L {path} {target}\n")),
            }
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an entry is refused. The entry's name is the uploader's, never a host path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("an absolute path")]
    Absolute,
    #[error("a path with a .. component")]
    DotDot,
    #[error("a path with \\ in it (only / separates)")]
    Backslash,
    #[error("a name that is not UTF-8")]
    NotUtf8,
    #[error("a path longer than {MAX_PATH} bytes or deeper than {MAX_DEPTH} directories")]
    TooLong,
    #[error("a hard link (only files, directories and relative symlinks are accepted)")]
    HardLink,
    #[error("a device node")]
    Device,
    #[error("a FIFO")]
    Fifo,
    #[error("a socket")]
    Socket,
    #[error("a sparse file")]
    Sparse,
    #[error("an entry of an unknown type")]
    Unknown,
    #[error("setuid or setgid (mode {0:04o})")]
    SetId(u32),
    #[error("a symlink with an absolute target")]
    LinkAbsolute,
    #[error("a symlink pointing outside the archive")]
    LinkOutside,
    #[error("a symlink to nothing in the archive")]
    LinkDangling,
    #[error("a symlink in a loop")]
    LinkLoop,
    #[error("a path through a symlink")]
    ThroughLink,
    #[error("a path through a file")]
    ThroughFile,
    #[error("an entry that appears twice")]
    Duplicate,
    #[error("encrypted")]
    Encrypted,
}

/// Why an upload is not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the upload is neither a tar archive (plain or gzip) nor a zip archive")]
    Format,
    /// The archive's own structure is broken (the crate's words: no host path in them).
    #[error("the archive cannot be read: {0}")]
    Corrupt(String),
    #[error("entry {entry:?} is refused: {why}")]
    Refused { entry: String, why: Refusal },
    #[error("the archive holds more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the archive unpacks to more than {0} times its own size (an archive bomb?)")]
    Ratio(u64),
    /// Writing what we unpacked failed: ours, not the uploader's (the journal gets the path).
    #[error("failed to write entry {entry:?} under {}: {source}", dir.display())]
    Write {
        entry: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const MAX_PATH: usize = 1024;
const MAX_DEPTH: usize = 64;
/// Unpacked bytes any archive may reach whatever its ratio.
const RATIO_FLOOR: u64 = 1 << 20;

/// Unpacks `data` (tar, tar.gz or zip, told by its first bytes) into `dir`, which must exist
/// and be empty.
pub fn unpack(data: &[u8], dir: &Path, caps: Caps) -> Result<Unpacked, ArchiveError> {
    let root =
        File::open(dir).map_err(|source| ArchiveError::Write { entry: ".".into(), dir: dir.to_owned(), source })?;
    let mut w = Writer { root: root.into(), dir, caps, packed: data.len() as u64, out: Unpacked::default() };
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        unpack_zip(data, &mut w)?;
    } else if data.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(flate2::read::GzDecoder::new(data), &mut w)?;
    } else if data.len() >= 512 && &data[257..262] == b"ustar" || looks_like_old_tar(data) {
        unpack_tar(data, &mut w)?;
    } else {
        return Err(ArchiveError::Format);
    }
    w.check_links()?;
    w.out.entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(w.out)
}

/// A pre-POSIX tar header: a checksum that adds up.
fn looks_like_old_tar(data: &[u8]) -> bool {
    if data.len() < 512 {
        return false;
    }
    let field = String::from_utf8_lossy(&data[148..156]);
    let Ok(sum) = u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8) else { return false };
    let mut header = data[..512].to_vec();
    header[148..156].copy_from_slice(b"        ");
    header.iter().map(|&b| u32::from(b)).sum::<u32>() == sum
}

fn unpack_tar(reader: impl Read, w: &mut Writer) -> Result<(), ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let header = entry.header();
        let mode = header.mode().map_err(corrupt)?;
        let kind = header.entry_type();
        use tar::EntryType as T;
        let what = match kind {
            T::Regular | T::Continuous => What::File,
            T::Directory => What::Dir,
            T::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                What::Link(String::from_utf8(target).map_err(|_| refused(&name, Refusal::NotUtf8))?)
            }
            T::Link => return Err(refused(&name, Refusal::HardLink)),
            T::Char | T::Block => return Err(refused(&name, Refusal::Device)),
            T::Fifo => return Err(refused(&name, Refusal::Fifo)),
            T::GNUSparse => return Err(refused(&name, Refusal::Sparse)),
            // Metadata the crate did not fold into the next entry: nothing to write.
            T::XGlobalHeader => continue,
            _ => return Err(refused(&name, Refusal::Unknown)),
        };
        w.entry(&raw, mode, what, &mut entry)?;
    }
    Ok(())
}

fn unpack_zip(data: &[u8], w: &mut Writer) -> Result<(), ArchiveError> {
    let corrupt = |e: zip::result::ZipError| ArchiveError::Corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(data)).map_err(corrupt)?;
    if archive.len() as u64 > w.caps.entries {
        return Err(ArchiveError::TooManyEntries(w.caps.entries));
    }
    for i in 0..archive.len() {
        let listed = archive.name_for_index(i).unwrap_or("?").to_owned();
        let mut file = match archive.by_index(i) {
            Ok(f) => f,
            Err(zip::result::ZipError::UnsupportedArchive(why)) if why.contains("assword") => {
                return Err(refused(&listed, Refusal::Encrypted));
            }
            Err(e) => return Err(corrupt(e)),
        };
        let raw = file.name_raw().to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if file.encrypted() {
            return Err(refused(&name, Refusal::Encrypted));
        }
        // Made on unix: the file type is in the mode. Elsewhere: a trailing / is a directory.
        let mode = file.unix_mode();
        let what = match mode.map(|m| m & 0o170_000) {
            Some(0o040_000) => What::Dir,
            Some(0o120_000) => {
                let mut target = Vec::new();
                (&mut file)
                    .take(MAX_PATH as u64 + 1)
                    .read_to_end(&mut target)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                What::Link(String::from_utf8(target).map_err(|_| refused(&name, Refusal::NotUtf8))?)
            }
            Some(0o020_000 | 0o060_000) => return Err(refused(&name, Refusal::Device)),
            Some(0o010_000) => return Err(refused(&name, Refusal::Fifo)),
            Some(0o140_000) => return Err(refused(&name, Refusal::Socket)),
            Some(0o100_000) => What::File,
            Some(0) | None if file.is_dir() => What::Dir,
            Some(0) | None => What::File,
            Some(_) => return Err(refused(&name, Refusal::Unknown)),
        };
        let mode = mode.map_or(if matches!(what, What::Dir) { 0o755 } else { 0o644 }, |m| m & 0o7777);
        w.entry(&raw, mode, what, &mut file)?;
    }
    Ok(())
}

fn refused(entry: &str, why: Refusal) -> ArchiveError {
    ArchiveError::Refused { entry: entry.to_owned(), why }
}

enum What {
    Dir,
    File,
    Link(String),
}

/// Writes entries beneath one directory fd.
struct Writer<'a> {
    root: OwnedFd,
    dir: &'a Path,
    caps: Caps,
    packed: u64,
    out: Unpacked,
}

/// Resolution for every step: beneath the directory fd, through no symlink at all.
fn strict() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
}

/// An entry's path as checked components; `None` for the archive's root itself (`./`).
fn components(raw: &[u8]) -> Result<Option<Vec<String>>, Refusal> {
    let name = std::str::from_utf8(raw).map_err(|_| Refusal::NotUtf8)?;
    if name.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    if name.contains('\\') {
        return Err(Refusal::Backslash);
    }
    if name.len() > MAX_PATH {
        return Err(Refusal::TooLong);
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(Refusal::DotDot),
            c => parts.push(c.to_owned()),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(Refusal::TooLong);
    }
    Ok((!parts.is_empty()).then_some(parts))
}

/// Where a symlink at `at` (its components) pointing to `target` ends up, lexically; `None`
/// when it climbs above the root.
fn resolve_lexically(at: &[String], target: &str) -> Result<Vec<String>, Refusal> {
    if target.starts_with('/') {
        return Err(Refusal::LinkAbsolute);
    }
    if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
        return Err(Refusal::LinkDangling);
    }
    let mut here: Vec<String> = at[..at.len() - 1].to_vec();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if here.pop().is_none() {
                    return Err(Refusal::LinkOutside);
                }
            }
            c => here.push(c.to_owned()),
        }
    }
    Ok(here)
}

impl Writer<'_> {
    fn write_err(&self, entry: &str) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
        let entry = entry.to_owned();
        move |source| ArchiveError::Write { entry, dir: self.dir.to_owned(), source }
    }

    fn entry(&mut self, raw: &[u8], mode: u32, what: What, content: &mut impl Read) -> Result<(), ArchiveError> {
        let name = String::from_utf8_lossy(raw).into_owned();
        if self.out.entries.len() as u64 >= self.caps.entries {
            return Err(ArchiveError::TooManyEntries(self.caps.entries));
        }
        let Some(parts) = components(raw).map_err(|why| refused(&name, why))? else {
            return Ok(());
        };
        if mode & 0o6000 != 0 && !matches!(what, What::Link(_)) {
            return Err(refused(&name, Refusal::SetId(mode & 0o7777)));
        }
        let path = parts.join("/");
        let (leaf, parents) = parts.split_last().expect("components() returns at least one");
        let parent = self.open_parents(&name, parents)?;
        let kind = match what {
            What::Dir => {
                match nix::sys::stat::mkdirat(Some(raw_fd(&parent)), leaf.as_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        self.open_dir(&parent, leaf).map_err(|e| self.classify(&name, &parent, leaf, e)).map(drop)?
                    }
                    // Already made as some file's parent, or listed twice: both fine for a
                    // directory, unless what is there is not one.
                    Err(Errno::EEXIST) => {
                        let meta = nix::sys::stat::fstatat(
                            Some(raw_fd(&parent)),
                            leaf.as_str(),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.write_err(&name)(e.into()))?;
                        if meta.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
                            return Err(refused(&name, Refusal::Duplicate));
                        }
                        if self.out.entries.iter().any(|(p, k)| *p == path && *k == Kind::Dir) {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(self.write_err(&name)(e.into())),
                }
                Kind::Dir
            }
            What::Link(target) => {
                resolve_lexically(&parts, &target).map_err(|why| refused(&name, why))?;
                match nix::unistd::symlinkat(target.as_str(), Some(raw_fd(&parent)), leaf.as_str()) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => return Err(refused(&name, Refusal::Duplicate)),
                    Err(e) => return Err(self.write_err(&name)(e.into())),
                }
                Kind::Link(target)
            }
            What::File => {
                let exec = mode & 0o111 != 0;
                let fd = match crate::sandbox::openat2(
                    &parent,
                    Path::new(leaf),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                    Mode::from_bits_truncate(0o600),
                    strict(),
                ) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {
                        return Err(refused(&name, Refusal::Duplicate))
                    }
                    Err(e) => return Err(self.write_err(&name)(e)),
                };
                let mut file = File::from(fd);
                let sha256 = self.copy(&name, content, &mut file)?;
                file.set_permissions(std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }))
                    .map_err(self.write_err(&name))?;
                Kind::File { exec, sha256 }
            }
        };
        self.out.entries.push((path, kind));
        Ok(())
    }

    /// Copies an entry's content, counting what is really there against the caps.
    fn copy(&mut self, name: &str, content: &mut impl Read, file: &mut File) -> Result<[u8; 32], ArchiveError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let ratio_cap = self.packed.saturating_mul(self.caps.ratio).max(RATIO_FLOOR);
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::Corrupt(format!("entry {name:?}: {e}"))),
            };
            self.out.bytes += n as u64;
            if self.out.bytes > self.caps.bytes {
                return Err(ArchiveError::TooLarge(self.caps.bytes));
            }
            if self.out.bytes > ratio_cap {
                return Err(ArchiveError::Ratio(self.caps.ratio));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(self.write_err(name))?;
        }
        Ok(hasher.finalize().into())
    }

    /// Opens (making them as needed) the directories above an entry, one component at a
    /// time, never through a symlink.
    fn open_parents(&self, name: &str, parents: &[String]) -> Result<OwnedFd, ArchiveError> {
        let mut dir = self.root.try_clone().map_err(self.write_err(name))?;
        for c in parents {
            let open = |dir: &OwnedFd| {
                crate::sandbox::openat2(
                    dir,
                    Path::new(c),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                    strict(),
                )
            };
            let next = match open(&dir) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
                    match nix::sys::stat::mkdirat(Some(raw_fd(&dir)), c.as_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) => self.open_dir(&dir, c).map_err(|e| self.classify(name, &dir, c, e)).map(drop)?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.write_err(name)(e.into())),
                    }
                    open(&dir).map_err(|e| self.classify(name, &dir, c, e))?
                }
                Err(e) => return Err(self.classify(name, &dir, c, e)),
            };
            dir = next;
        }
        Ok(dir)
    }

    /// Opens a directory we just made and gives it mode 0755 whatever the umask.
    fn open_dir(&self, parent: &OwnedFd, leaf: &str) -> std::io::Result<File> {
        let fd = crate::sandbox::openat2(
            parent,
            Path::new(leaf),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
            strict(),
        )?;
        let dir = File::from(fd);
        dir.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// ELOOP and ENOTDIR on the way to an entry are the archive's doing: a symlink or a file
    /// where `component` (in `dir`) should be a directory.
    fn classify(&self, name: &str, dir: &OwnedFd, component: &str, e: std::io::Error) -> ArchiveError {
        if !matches!(e.raw_os_error(), Some(nix::libc::ELOOP | nix::libc::ENOTDIR)) {
            return self.write_err(name)(e);
        }
        let link = nix::sys::stat::fstatat(Some(raw_fd(dir)), component, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|m| m.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK);
        refused(name, if link { Refusal::ThroughLink } else { Refusal::ThroughFile })
    }

    /// Resolves every symlink the kernel's way, beneath the root: a chain of links that
    /// climbs out (each one fine on its own) fails here.
    fn check_links(&self) -> Result<(), ArchiveError> {
        for (path, kind) in &self.out.entries {
            if !matches!(kind, Kind::Link(_)) {
                continue;
            }
            let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
            match crate::sandbox::openat2(&self.root, Path::new(path), OFlag::O_PATH, Mode::empty(), resolve) {
                Ok(_) => {}
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(nix::libc::EXDEV) => Refusal::LinkOutside,
                        Some(nix::libc::ENOENT | nix::libc::ENOTDIR) => Refusal::LinkDangling,
                        Some(nix::libc::ELOOP) => Refusal::LinkLoop,
                        _ => return Err(self.write_err(path)(e)),
                    };
                    return Err(refused(path, why));
                }
            }
        }
        Ok(())
    }
}

fn raw_fd(fd: &OwnedFd) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    fd.as_fd().as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps { entries: 100, bytes: 1 << 20, ratio: 100 };

    /// One tar entry as written: name, type, mode, content, link target.
    type TarEntry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

    /// A tar with raw headers, so that names and types no honest tool writes can be made.
    fn tar_of(entries: &[TarEntry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, data, link) in entries {
            let mut h = tar::Header::new_old();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn refusal(data: &[u8]) -> (String, Refusal) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::create_dir(&target).unwrap();
        match unpack(data, &target, CAPS) {
            Err(ArchiveError::Refused { entry, why }) => (entry, why),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn paths_are_checked_lexically() {
        assert_eq!(components(b"./a//b/./c").unwrap(), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(components(b"./").unwrap(), None);
        assert_eq!(components(b"/etc/passwd"), Err(Refusal::Absolute));
        assert_eq!(components(b"a/../../x"), Err(Refusal::DotDot));
        assert_eq!(components(b"a\\..\\x"), Err(Refusal::Backslash));
        assert_eq!(components(b"\xff"), Err(Refusal::NotUtf8));
        let deep = "d/".repeat(MAX_DEPTH + 1);
        assert_eq!(components(deep.as_bytes()), Err(Refusal::TooLong));
    }

    #[test]
    fn link_targets_stay_beneath() {
        let at = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(resolve_lexically(&at("a/l"), "../b").unwrap(), vec!["b".to_owned()]);
        assert_eq!(resolve_lexically(&at("l"), "../x"), Err(Refusal::LinkOutside));
        assert_eq!(resolve_lexically(&at("a/l"), "/etc"), Err(Refusal::LinkAbsolute));
    }

    #[test]
    fn a_good_tar_unpacks_with_normalised_modes() {
        use tar::EntryType as T;
        let data = tar_of(&[
            ("./", T::Directory, 0o700, b"", None),
            ("bin/run", T::Regular, 0o700, b"#!/bin/sh\n", None),
            ("lib/data.txt", T::Regular, 0o600, b"hello", None),
            ("lib/", T::Directory, 0o700, b"", None),
            ("link", T::Symlink, 0o777, b"", Some("lib/data.txt")),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let out = unpack(&data, dir.path(), CAPS).unwrap();
        let mode = |p: &str| std::fs::symlink_metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("bin/run"), mode("lib/data.txt"), mode("lib"), mode("bin")), (0o755, 0o644, 0o755, 0o755));
        assert_eq!(std::fs::read_link(dir.path().join("link")).unwrap(), Path::new("lib/data.txt"));
        assert_eq!(out.files(), 2);
        assert_eq!(out.bytes, 15);
        let paths: Vec<&str> = out.entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["bin/run", "lib", "lib/data.txt", "link"]);
    }

    #[test]
    fn each_hostile_tar_entry_is_refused_by_name() {
        use tar::EntryType as T;
        let cases: Vec<(Vec<u8>, &str, Refusal)> = vec![
            (tar_of(&[("/etc/x", T::Regular, 0o644, b"x", None)]), "/etc/x", Refusal::Absolute),
            (tar_of(&[("a/../../x", T::Regular, 0o644, b"x", None)]), "a/../../x", Refusal::DotDot),
            (tar_of(&[("h", T::Link, 0o644, b"", Some("/etc/shadow"))]), "h", Refusal::HardLink),
            (tar_of(&[("dev", T::Char, 0o644, b"", None)]), "dev", Refusal::Device),
            (tar_of(&[("blk", T::Block, 0o644, b"", None)]), "blk", Refusal::Device),
            (tar_of(&[("fifo", T::Fifo, 0o644, b"", None)]), "fifo", Refusal::Fifo),
            (tar_of(&[("suid", T::Regular, 0o4755, b"x", None)]), "suid", Refusal::SetId(0o4755)),
            (tar_of(&[("sgid", T::Directory, 0o2755, b"", None)]), "sgid", Refusal::SetId(0o2755)),
            (tar_of(&[("l", T::Symlink, 0o777, b"", Some("/etc"))]), "l", Refusal::LinkAbsolute),
            (tar_of(&[("a/l", T::Symlink, 0o777, b"", Some("../../etc"))]), "a/l", Refusal::LinkOutside),
            (tar_of(&[("l", T::Symlink, 0o777, b"", Some("nothing"))]), "l", Refusal::LinkDangling),
            // Each link fine lexically; the chain climbs out.
            (
                tar_of(&[
                    ("d/up", T::Symlink, 0o777, b"", Some("..")),
                    ("out", T::Symlink, 0o777, b"", Some("d/up/..")),
                ]),
                "out",
                Refusal::LinkOutside,
            ),
            // A file written through a link the archive made first.
            (
                tar_of(&[("l", T::Symlink, 0o777, b"", Some(".")), ("l/x", T::Regular, 0o644, b"x", None)]),
                "l/x",
                Refusal::ThroughLink,
            ),
            (
                tar_of(&[("f", T::Regular, 0o644, b"x", None), ("f/x", T::Regular, 0o644, b"x", None)]),
                "f/x",
                Refusal::ThroughFile,
            ),
            (
                tar_of(&[("f", T::Regular, 0o644, b"x", None), ("f", T::Regular, 0o644, b"y", None)]),
                "f",
                Refusal::Duplicate,
            ),
            (
                tar_of(&[
                    ("l", T::Symlink, 0o777, b"", Some("f")),
                    ("f", T::Regular, 0o644, b"y", None),
                    ("l", T::Regular, 0o644, b"y", None),
                ]),
                "l",
                Refusal::Duplicate,
            ),
        ];
        for (data, entry, why) in cases {
            assert_eq!(refusal(&data), (entry.to_owned(), why));
        }
    }

    #[test]
    fn nothing_is_written_outside_the_target() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::create_dir(&target).unwrap();
        // A link to the outside, then a file through it: the link is refused by its own
        // check only at the end, so the write through it must already fail.
        let data =
            tar_of(&[("esc", T::Symlink, 0o777, b"", Some("ok/../..")), ("esc/pwned", T::Regular, 0o644, b"x", None)]);
        assert!(unpack(&data, &target, CAPS).is_err());
        assert!(!dir.path().join("pwned").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["t"]);
    }

    #[test]
    fn caps_hold_as_bytes_are_written() {
        use tar::EntryType as T;
        let names: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
        let many: Vec<TarEntry> = names.iter().map(|n| (n.as_str(), T::Regular, 0o644, &b""[..], None)).collect();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(unpack(&tar_of(&many), dir.path(), CAPS), Err(ArchiveError::TooManyEntries(100))));
        let big = vec![0u8; (1 << 20) + 1];
        let dir = tempfile::tempdir().unwrap();
        let data = tar_of(&[("big", T::Regular, 0o644, &big, None)]);
        assert!(matches!(unpack(&data, dir.path(), CAPS), Err(ArchiveError::TooLarge(_))));
        // 8 MiB of zeros gzip to a few KiB: over the ratio long before the size cap.
        let zeros = vec![0u8; 8 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar_of(&[("z", T::Regular, 0o644, &zeros, None)])).unwrap();
        let bomb = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let caps = Caps { entries: 100, bytes: 1 << 30, ratio: 100 };
        assert!(matches!(unpack(&bomb, dir.path(), caps), Err(ArchiveError::Ratio(100))));
    }

    fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, mode, data) in entries {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .unix_permissions(*mode);
            if mode & 0o170_000 == 0o120_000 {
                z.add_symlink(*name, std::str::from_utf8(data).unwrap(), opts).unwrap();
            } else {
                z.start_file(*name, opts).unwrap();
                z.write_all(data).unwrap();
            }
        }
        z.finish().unwrap().into_inner()
    }

    /// Sets the unix mode of a one-entry zip in its central directory, as a hostile tool
    /// would (the writer masks modes to 0o777).
    fn with_mode(mut data: Vec<u8>, mode: u32) -> Vec<u8> {
        let at = data.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        data[at + 5] = 3;
        data[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
        data
    }

    #[test]
    fn zip_slip_and_zip_links_are_refused() {
        assert_eq!(refusal(&zip_of(&[("../evil", 0o644, b"x")])), ("../evil".into(), Refusal::DotDot));
        assert_eq!(refusal(&zip_of(&[("/abs", 0o644, b"x")])), ("/abs".into(), Refusal::Absolute));
        assert_eq!(refusal(&zip_of(&[("..\\evil", 0o644, b"x")])), ("..\\evil".into(), Refusal::Backslash));
        assert_eq!(refusal(&zip_of(&[("l", 0o120_777, b"/etc")])), ("l".into(), Refusal::LinkAbsolute));
        assert_eq!(refusal(&with_mode(zip_of(&[("s", 0o755, b"x")]), 0o104_755)), ("s".into(), Refusal::SetId(0o4755)));
        assert_eq!(refusal(&with_mode(zip_of(&[("p", 0o644, b"")]), 0o010_644)), ("p".into(), Refusal::Fifo));
        assert_eq!(refusal(&with_mode(zip_of(&[("d", 0o644, b"")]), 0o020_644)), ("d".into(), Refusal::Device));
        let dir = tempfile::tempdir().unwrap();
        let out = unpack(&zip_of(&[("main.py", 0o100_644, b"def handle(r): pass\n")]), dir.path(), CAPS).unwrap();
        assert_eq!(out.top_file("main.py"), Some(false));
    }

    #[test]
    fn the_digest_names_content_not_archive_order() {
        use tar::EntryType as T;
        let a = tar_of(&[("x", T::Regular, 0o644, b"1", None), ("y", T::Regular, 0o755, b"2", None)]);
        let b = tar_of(&[("y", T::Regular, 0o700, b"2", None), ("./x", T::Regular, 0o600, b"1", None)]);
        let c = tar_of(&[("y", T::Regular, 0o644, b"2", None), ("x", T::Regular, 0o644, b"1", None)]);
        let digest = |data: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            let mut h = Sha256::new();
            unpack(data, dir.path(), CAPS).unwrap().hash_into(&mut h);
            hex(&h.finalize())
        };
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c), "the execute bit is part of the content");
        assert_eq!(
            unpack(b"not an archive at all", tempfile::tempdir().unwrap().path(), CAPS).err().map(|e| e.to_string()),
            Some(ArchiveError::Format.to_string())
        );
    }
}
