//! A filesystem that forgets what was not fsynced, for power-cut tests in
//! the spirit of Jepsen's LazyFS: a FUSE filesystem served from this test
//! process and held in its memory. Brokers (real `strata` processes) keep
//! their data directories on it. Each file has two versions: what its
//! writers see, and what survives a power cut, which catches up with the
//! first only when the file is fsynced (fsync or fdatasync).
//! [`LazyFs::cut_power`] throws away every write, extension and truncation
//! not fsynced since, and fails every later operation with EIO, as a
//! machine that lost power serves nothing; [`LazyFs::restore_power`]
//! mounts the filesystem afresh (no kernel cache of the lost data left).
//!
//! The model is that of a disk with a volatile write cache and a
//! filesystem that journals its metadata at once: names (create, rename,
//! unlink, mkdir) are durable as soon as made, file contents only once
//! fsynced. A file created and written but never fsynced is empty after
//! the cut, and a file written to a temporary name and renamed without an
//! fsync is empty under its new name, as on ext4 without `auto_da_alloc`.
//!
//! Needs root (a direct mount(2) of `fuse`) and `/dev/fuse`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use tempfile::TempDir;

/// How long the kernel may cache names and attributes: every change goes
/// through the kernel, so its caches stay true until a power cut, after
/// which the filesystem is mounted afresh.
const TTL: Duration = Duration::from_secs(60);
/// The size the filesystem reports (statfs).
const CAPACITY: u64 = 64 << 30;
const BLOCK: u64 = 4096;

/// Whether this process may mount a FUSE filesystem: it runs as root and
/// `/dev/fuse` opens.
pub fn available() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

enum Kind {
    File {
        /// What readers see now.
        data: Vec<u8>,
        /// What a power cut leaves.
        synced: Vec<u8>,
        /// The bytes of `data` written (or zeroed by a truncation) since
        /// the last fsync, as one covering range.
        dirty: Option<(usize, usize)>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        parent: u64,
    },
}

struct Node {
    kind: Kind,
    perm: u16,
    /// Names pointing at the node (0 once unlinked).
    nlink: u32,
    /// Open handles: an unlinked file lives until the last is released.
    open: u32,
    mtime: SystemTime,
}

impl Node {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, nlink) = match &self.kind {
            Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64, self.nlink),
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: self.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }
}

/// The filesystem's state, shared by the mounts it has had.
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Power is off: every operation fails.
    cut: bool,
    /// Bytes of file contents thrown away by power cuts (those that
    /// differed from what was synced).
    dropped: u64,
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                kind: Kind::Dir {
                    entries: BTreeMap::new(),
                    parent: 1,
                },
                perm: 0o755,
                nlink: 1,
                open: 0,
                mtime: SystemTime::now(),
            },
        );
        State {
            nodes,
            next_ino: 2,
            cut: false,
            dropped: 0,
        }
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.attr(ino))
            .ok_or(Errno::ENOENT)
    }

    /// A new node named `name` in `dir`.
    fn make(&mut self, dir: u64, name: &OsStr, kind: Kind, mode: u32) -> Result<u64, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm: (mode & 0o7777) as u16,
                nlink: 1,
                open: 0,
                mtime: SystemTime::now(),
            },
        );
        self.entries(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// One name of `ino` is gone; the node goes with its last name and
    /// handle.
    fn unlinked(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
        }
        self.drop_if_gone(ino);
    }

    /// A handle on `ino` is closed; the node goes if it has no name left.
    fn released(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        self.drop_if_gone(ino);
    }

    /// Removes `ino` once it has neither a name nor an open handle.
    fn drop_if_gone(&mut self, ino: u64) {
        if self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.nlink == 0 && n.open == 0)
        {
            self.nodes.remove(&ino);
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(n) if matches!(n.kind, Kind::File { .. }) => Ok(n),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn set_len(&mut self, ino: u64, len: usize) -> Result<(), Errno> {
        let node = self.file(ino)?;
        node.mtime = SystemTime::now();
        if let Kind::File { data, dirty, .. } = &mut node.kind {
            let old = data.len();
            data.resize(len, 0);
            mark(dirty, old.min(len), old.max(len));
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let node = self.file(ino)?;
        node.mtime = SystemTime::now();
        if let Kind::File { data, dirty, .. } = &mut node.kind {
            let end = offset + bytes.len();
            let from = data.len().min(offset);
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset..end].copy_from_slice(bytes);
            mark(dirty, from, end);
        }
        Ok(())
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        if let Kind::File {
            data,
            synced,
            dirty,
        } = &mut self.file(ino)?.kind
        {
            synced.resize(data.len(), 0);
            if let Some((lo, hi)) = dirty.take() {
                let hi = hi.min(data.len());
                if lo < hi {
                    synced[lo..hi].copy_from_slice(&data[lo..hi]);
                }
            }
        }
        Ok(())
    }

    /// Every file back to what it was at its last fsync; handles are gone
    /// with the processes that held them.
    fn power_cut(&mut self) -> u64 {
        let mut dropped = 0;
        for n in self.nodes.values_mut() {
            n.open = 0;
            if let Kind::File {
                data,
                synced,
                dirty,
            } = &mut n.kind
            {
                if let Some((lo, hi)) = dirty.take() {
                    // The bytes that differ from what was synced.
                    let hi = hi.max(data.len()).max(synced.len());
                    dropped += (lo..hi).filter(|&i| data.get(i) != synced.get(i)).count() as u64;
                }
                *data = synced.clone();
            }
        }
        self.nodes.retain(|_, n| n.nlink > 0);
        self.cut = true;
        self.dropped += dropped;
        dropped
    }

    fn used(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File { data, .. } => data.len() as u64,
                Kind::Dir { .. } => BLOCK,
            })
            .sum()
    }
}

/// Widens the dirty range to cover `lo..hi`.
fn mark(dirty: &mut Option<(usize, usize)>, lo: usize, hi: usize) {
    if lo >= hi {
        return;
    }
    *dirty = Some(match *dirty {
        Some((a, b)) => (a.min(lo), b.max(hi)),
        None => (lo, hi),
    });
}

/// The FUSE side: one per mount, all over the same [`State`].
struct Fs(Arc<Mutex<State>>);

impl Fs {
    /// The state, or EIO while the power is off.
    fn on(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.cut {
            return Err(Errno::EIO);
        }
        Ok(s)
    }

    fn entry(&self, reply: ReplyEntry, f: impl FnOnce(&mut State) -> Result<u64, Errno>) {
        match self.on().and_then(|mut s| {
            let ino = f(&mut s)?;
            s.attr(ino)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, f: impl FnOnce(&mut State) -> Result<(), Errno>) {
        match self.on().and_then(|mut s| f(&mut s)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |s| s.child(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.on().and_then(|s| s.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let res = self.on().and_then(|mut s| {
            if let Some(len) = size {
                s.set_len(ino.0, len as usize)?;
            }
            if let Some(mode) = mode {
                if let Some(n) = s.nodes.get_mut(&ino.0) {
                    n.perm = (mode & 0o7777) as u16;
                }
            }
            s.attr(ino.0)
        });
        match res {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(reply, |s| {
            let kind = Kind::Dir {
                entries: BTreeMap::new(),
                parent: parent.0,
            };
            s.make(parent.0, name, kind, mode & !umask)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |s| {
            let ino = s.child(parent.0, name)?;
            if matches!(s.nodes[&ino].kind, Kind::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            s.entries(parent.0)?.remove(name);
            s.unlinked(ino);
            Ok(())
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |s| {
            let ino = s.child(parent.0, name)?;
            if !s.entries(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            s.entries(parent.0)?.remove(name);
            s.unlinked(ino);
            Ok(())
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |s| {
            let ino = s.child(parent.0, name)?;
            let target = s.entries(newparent.0)?.get(newname).copied();
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                let other = target.ok_or(Errno::ENOENT)?;
                s.entries(parent.0)?.insert(name.to_owned(), other);
                s.entries(newparent.0)?.insert(newname.to_owned(), ino);
                return Ok(());
            }
            if let Some(old) = target {
                if old == ino {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                let dir = |n: u64, s: &State| matches!(s.nodes[&n].kind, Kind::Dir { .. });
                match (dir(ino, s), dir(old, s)) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if !s.entries(old)?.is_empty() => return Err(Errno::ENOTEMPTY),
                    _ => {}
                }
            }
            s.entries(parent.0)?.remove(name);
            s.entries(newparent.0)?.insert(newname.to_owned(), ino);
            if let Some(Kind::Dir { parent: p, .. }) = s.nodes.get_mut(&ino).map(|n| &mut n.kind) {
                *p = newparent.0;
            }
            if let Some(old) = target {
                s.unlinked(old);
            }
            Ok(())
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.on().and_then(|mut s| {
            if flags.0 & libc::O_TRUNC != 0 {
                s.set_len(ino.0, 0)?;
            }
            let n = s.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            n.open += 1;
            Ok(())
        });
        match res {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.on().and_then(|mut s| {
            let kind = Kind::File {
                data: Vec::new(),
                synced: Vec::new(),
                dirty: None,
            };
            let ino = s.make(parent.0, name, kind, mode & !umask)?;
            s.nodes.get_mut(&ino).expect("just made").open += 1;
            s.attr(ino)
        });
        match res {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.on().and_then(|mut s| match &s.file(ino.0)?.kind {
            Kind::File { data, .. } => {
                let from = (offset as usize).min(data.len());
                let to = (from + size as usize).min(data.len());
                Ok(data[from..to].to_vec())
            }
            Kind::Dir { .. } => Err(Errno::EISDIR),
        });
        match res {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .on()
            .and_then(|mut s| s.write(ino.0, offset as usize, data))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |_| Ok(()));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Not refused while the power is off: the kernel closes the handles
        // of the processes killed after the cut.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .released(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |s| s.fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.on().and_then(|mut s| s.entries(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.on().and_then(|s| {
            let Some(Kind::Dir { entries, parent }) = s.nodes.get(&ino.0).map(|n| &n.kind) else {
                return Err(Errno::ENOTDIR);
            };
            let mut all = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (*parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in entries {
                let kind = match s.nodes.get(child).map(|n| &n.kind) {
                    Some(Kind::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                all.push((*child, kind, name.clone()));
            }
            Ok(all)
        });
        match listed {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable at once (see the module's comment).
        self.empty(reply, |_| Ok(()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.on() {
            Ok(s) => {
                let blocks = CAPACITY / BLOCK;
                let free = blocks.saturating_sub(s.used().div_ceil(BLOCK));
                let files = s.nodes.len() as u64;
                reply.statfs(
                    blocks,
                    free,
                    free,
                    files + 1_000_000,
                    1_000_000,
                    BLOCK as u32,
                    255,
                    BLOCK as u32,
                );
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`Fs`] in a temporary directory, unmounted on drop.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    _dir: TempDir,
}

impl LazyFs {
    pub fn mount() -> LazyFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mount point");
        let mut fs = LazyFs {
            state: Arc::new(Mutex::new(State::new())),
            session: None,
            mountpoint,
            _dir: dir,
        };
        fs.restore_power();
        fs
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every file goes back to what it held at its last
    /// fsync, and every operation fails from now on. Returns the bytes
    /// thrown away. Kill the processes using the filesystem next.
    pub fn cut_power(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .power_cut()
    }

    /// Bytes thrown away by all power cuts so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }

    /// Mounts the filesystem afresh over the state it keeps, so that no
    /// kernel cache of what a power cut threw away is left, and serves
    /// operations again. Stop the processes using it first.
    pub fn restore_power(&mut self) {
        if let Some(session) = self.session.take() {
            session.umount_and_join().expect("unmount");
        }
        self.state.lock().unwrap_or_else(|e| e.into_inner()).cut = false;
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("strata-lazyfs".into())];
        let session = fuser::spawn_mount(Fs(self.state.clone()), &self.mountpoint, &config)
            .unwrap_or_else(|e| panic!("mount {}: {e}", self.mountpoint.display()));
        self.session = Some(session);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
