//! Stored bodies (in memory or in a file of the cache directory) and the
//! readers that follow them as they fill.
//!
//! An [`Object`] is one version of a body: its bytes so far, whether more
//! come ([`Fill`]), and what its readers have asked for (the demand the
//! fill follows, see [`flight`](super::flight)). Memory objects are copied
//! into pages of their own (never holding the HTTP library's buffers), so
//! the cache holds exactly what it counts; disk objects hold no descriptor
//! of their own once filled (each reader opens the file).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};
use tokio::io::{AsyncRead, ReadBuf};

use super::index::{Fill, Stored};

/// How far a body is read while no reader has asked for more: a session
/// whose client has not answered sends one DATA block (at most 65464
/// bytes), so a reader past this is a verified client's.
pub const FIRST_WINDOW: u64 = 64 * 1024;

/// File name suffix of the cache directory's objects (removed at start).
const OBJECT_SUFFIX: &str = ".tftp-cache";

/// Bytes of one page of an in-memory object.
pub(crate) const PAGE: usize = 64 * 1024;

/// Where cached bodies live.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Memory,
    Disk(PathBuf),
}

/// An in-memory body: pages of [`PAGE`] bytes (the last one, or with a
/// known size each, allocated no larger than what is left), filled by
/// copying, so the cache holds exactly what it counts.
#[derive(Default)]
struct Pages(Vec<Vec<u8>>);

enum Data {
    Memory(Mutex<Pages>),
    /// A file of the cache directory. Only the fill holds a descriptor (to
    /// write); every reader opens its own, so stored objects hold none.
    Disk {
        path: PathBuf,
        writer: Mutex<Option<std::fs::File>>,
    },
}

/// One version of an object: its bytes so far and whether more come.
pub(crate) struct Object {
    size: Option<u64>,
    modified: Option<std::time::SystemTime>,
    data: Data,
    len: AtomicU64,
    state: Mutex<Fill>,
    grown: Event,
    /// The cache let it go (evicted, replaced, dropped): a disk object's
    /// file is gone.
    released: AtomicBool,
    /// Readers alive.
    readers: AtomicUsize,
    /// The furthest byte a reader has asked for.
    demand: AtomicU64,
    /// A reader asked past its first block: the body is read to its end.
    committed: AtomicBool,
    /// Notified when demand grows or a reader comes or goes.
    wanted: Event,
}

impl Stored for Arc<Object> {
    fn len(&self) -> u64 {
        Object::len(self)
    }

    fn fill(&self) -> Fill {
        self.fill_state()
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

impl Object {
    /// A new, empty object of announced `size`; on disk, file number `n`
    /// of `store`'s directory.
    pub fn create(
        store: &Store,
        n: u64,
        size: Option<u64>,
        modified: Option<std::time::SystemTime>,
    ) -> io::Result<Self> {
        let data = match store {
            Store::Memory => Data::Memory(Mutex::default()),
            Store::Disk(dir) => {
                let path = dir.join(format!("{n}{OBJECT_SUFFIX}"));
                let file = crate::cachedir::create_file(&path)?;
                Data::Disk {
                    path,
                    writer: Mutex::new(Some(file)),
                }
            }
        };
        Ok(Object {
            size,
            modified,
            data,
            len: AtomicU64::new(0),
            state: Mutex::new(Fill::Filling),
            grown: Event::new(),
            released: AtomicBool::new(false),
            readers: AtomicUsize::new(0),
            demand: AtomicU64::new(0),
            committed: AtomicBool::new(false),
            wanted: Event::new(),
        })
    }

    /// How far its body has come.
    pub fn fill_state(&self) -> Fill {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether its fill failed.
    #[cfg(test)]
    pub fn failed(&self) -> bool {
        matches!(self.fill_state(), Fill::Failed(_))
    }

    fn complete(&self) -> bool {
        matches!(self.fill_state(), Fill::Done)
    }

    /// Let go by the cache (once): a disk object's file is unlinked;
    /// readers that have it open read on.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.unlink();
        }
    }

    /// A disk copy released (evicted, replaced) before it could be opened:
    /// its file is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self.data, Data::Disk { .. }) && self.released.load(Ordering::Acquire)
    }

    /// Body bytes stored so far.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The announced size, if any.
    pub fn announced(&self) -> Option<u64> {
        self.size
    }

    /// When the origin says it last changed.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }

    /// The size to announce (`tsize`): the origin's, or the final length.
    pub fn size(&self) -> Option<u64> {
        self.size.or_else(|| self.complete().then(|| self.len()))
    }

    /// Readers alive.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Acquire)
    }

    /// Whether a reader wants bytes that are not there yet (or anything,
    /// once one asked past its first block).
    pub fn wants_more(&self) -> bool {
        self.committed.load(Ordering::Acquire) || self.demand.load(Ordering::Acquire) > self.len()
    }

    /// Notified when the demand grows or a reader comes or goes (listen,
    /// then look).
    pub fn listen_demand(&self) -> EventListener {
        self.wanted.listen()
    }

    /// Whether a reader asked past its first block.
    #[cfg(test)]
    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::Relaxed)
    }

    /// A reader whose client's first block ends at `first_block` asks for
    /// the bytes up to `end`: past that block, its client has answered.
    pub fn want(&self, end: u64, first_block: u64) {
        if end > first_block.min(FIRST_WINDOW) && !self.committed.swap(true, Ordering::AcqRel) {
            self.wanted.notify(1);
        }
        if end > self.demand.fetch_max(end, Ordering::AcqRel) {
            self.wanted.notify(1);
        }
    }

    /// Bytes of capacity appending `n` bytes adds, for an object of unknown
    /// size (whole pages in memory; the bytes themselves on disk).
    pub fn charge_for(&self, n: usize) -> u64 {
        match &self.data {
            Data::Memory(_) => {
                let page = PAGE as u64;
                let held = self.len().div_ceil(page).saturating_mul(page);
                let needed = self
                    .len()
                    .saturating_add(n as u64)
                    .div_ceil(page)
                    .saturating_mul(page);
                needed.saturating_sub(held)
            }
            Data::Disk { .. } => n as u64,
        }
    }

    /// Appends `chunk` and wakes the readers.
    pub fn append(&self, chunk: &[u8]) -> io::Result<()> {
        let at = self.len();
        match &self.data {
            Data::Memory(pages) => {
                let mut pages = pages.lock().unwrap_or_else(|e| e.into_inner());
                let mut rest = chunk;
                let mut len = at;
                while !rest.is_empty() {
                    let full = pages.0.last().is_none_or(|p| p.len() == p.capacity());
                    if full {
                        let left = self.size.map_or(u64::MAX, |s| s.saturating_sub(len));
                        let cap = usize::try_from(left).unwrap_or(PAGE).clamp(1, PAGE);
                        pages.0.push(Vec::with_capacity(cap));
                    }
                    // NOTE(unwrap): a page was pushed above if there was none.
                    let Some(page) = pages.0.last_mut() else {
                        break;
                    };
                    let n = (page.capacity() - page.len()).min(rest.len());
                    let (now, later) = rest.split_at(n);
                    page.extend_from_slice(now);
                    rest = later;
                    len += n as u64;
                }
            }
            Data::Disk { writer, .. } => {
                use std::os::unix::fs::FileExt;
                let writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                match writer.as_ref() {
                    Some(file) => file.write_all_at(chunk, at)?,
                    None => return Err(io::Error::other("cache file closed")),
                }
            }
        }
        self.len.fetch_add(chunk.len() as u64, Ordering::Release);
        self.grown.notify(usize::MAX);
        Ok(())
    }

    /// Ends the fill: whole, or failed (readers get the error).
    pub fn finish(&self, result: Result<(), String>) {
        if let Data::Disk { writer, .. } = &self.data {
            writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = match result {
            Ok(()) => Fill::Done,
            Err(e) => Fill::Failed(e.into()),
        };
        self.grown.notify(usize::MAX);
    }

    fn unlink(&self) {
        if let Data::Disk { path, .. } = &self.data {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Copies bytes at `pos` into `buf` (from `file`, a disk object's
    /// reader's own descriptor); 0 if none are there yet.
    fn read_at(&self, pos: u64, buf: &mut [u8], file: Option<&std::fs::File>) -> io::Result<usize> {
        let available = self.len().saturating_sub(pos);
        let want = usize::try_from((buf.len() as u64).min(available)).unwrap_or(buf.len());
        if want == 0 {
            return Ok(0);
        }
        match (&self.data, file) {
            (Data::Memory(pages), _) => {
                let pages = pages.lock().unwrap_or_else(|e| e.into_inner());
                let mut copied = 0;
                while copied < want {
                    let at = pos + copied as u64;
                    // Every page but the last holds PAGE bytes (a known
                    // size's last page is shorter), so the page is at/PAGE.
                    let index = usize::try_from(at / PAGE as u64).unwrap_or(usize::MAX);
                    let from = (at % PAGE as u64) as usize;
                    let Some(page) = pages.0.get(index) else {
                        break;
                    };
                    let Some(bytes) = page.get(from..) else { break };
                    let n = bytes.len().min(want - copied);
                    if n == 0 {
                        break;
                    }
                    buf[copied..copied + n].copy_from_slice(&bytes[..n]);
                    copied += n;
                }
                Ok(copied)
            }
            (Data::Disk { .. }, Some(file)) => {
                use std::os::unix::fs::FileExt;
                file.read_at(&mut buf[..want], pos)
            }
            (Data::Disk { .. }, None) => Err(io::Error::other("cache file not open")),
        }
    }

    /// A reader from the first byte, for a client whose first block (all
    /// it reads before it has answered) is `first_block` bytes; a disk
    /// object's reader opens the file (an error if it cannot: out of
    /// descriptors, or the object was evicted in between).
    pub fn reader(self: &Arc<Self>, first_block: u64) -> io::Result<ObjectReader> {
        let file = match &self.data {
            Data::Memory(_) => None,
            Data::Disk { path, .. } => Some(std::fs::File::open(path)?),
        };
        self.readers.fetch_add(1, Ordering::AcqRel);
        self.wanted.notify(1);
        Ok(ObjectReader {
            object: self.clone(),
            file,
            pos: 0,
            first_block,
            listener: None,
        })
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Reads a cached object, waiting for bytes the fill has not written yet.
pub struct ObjectReader {
    object: Arc<Object>,
    file: Option<std::fs::File>,
    pos: u64,
    first_block: u64,
    listener: Option<EventListener>,
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if self.object.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.object.wanted.notify(1);
        }
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.object.want(
            this.pos.saturating_add(buf.remaining() as u64),
            this.first_block,
        );
        loop {
            let n = this
                .object
                .read_at(this.pos, buf.initialize_unfilled(), this.file.as_ref())?;
            if n > 0 {
                buf.advance(n);
                this.pos += n as u64;
                this.listener = None;
                return Poll::Ready(Ok(()));
            }
            match this.object.fill_state() {
                Fill::Done if this.pos >= this.object.len() => return Poll::Ready(Ok(())),
                Fill::Failed(why) => return Poll::Ready(Err(io::Error::other(why.to_string()))),
                _ => {}
            }
            match &mut this.listener {
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.listener = None;
                }
                // Listen, then look again: bytes that came in between
                // would otherwise be missed.
                None => this.listener = Some(this.object.grown.listen()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(store: &Store, size: Option<u64>, chunks: &[&[u8]]) -> Arc<Object> {
        let o = Object::create(store, 1, size, None).unwrap();
        for c in chunks {
            o.append(c).unwrap();
        }
        Arc::new(o)
    }

    fn pieces(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&n| {
                let piece = data[at..at + n].to_vec();
                at += n;
                piece
            })
            .collect()
    }

    #[test]
    fn reads_at_any_offset_across_pieces_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let total = 3 * PAGE + 5000;
        let data: Vec<u8> = (0..=255).cycle().take(total).collect();
        let sizes = [1, 7, 1000, 1, PAGE, 2500, PAGE + 3, PAGE - 2000];
        let rest = total - sizes.iter().sum::<usize>();
        let parts = pieces(&data, &[&sizes[..], &[rest]].concat());
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), total);
        for store in [Store::Memory, Store::Disk(dir.path().to_owned())] {
            for size in [None, Some(total as u64)] {
                let o = object(&store, size, &parts);
                let reader = o.reader(512).unwrap();
                assert_eq!(o.len(), total as u64);
                let p = PAGE as u64;
                for pos in [0u64, 1, 7, 8, 1007, 1008, p - 1, p, p + 1, 2 * p + 17] {
                    for len in [1usize, 3, 1468, PAGE + 1, 3 * PAGE] {
                        let mut buf = vec![0; len];
                        let n = o.read_at(pos, &mut buf, reader.file.as_ref()).unwrap();
                        let end = (pos as usize + len).min(total);
                        assert_eq!(n, end - pos as usize, "{store:?} {size:?} {pos} {len}");
                        assert_eq!(&buf[..n], &data[pos as usize..end]);
                    }
                }
                let mut buf = [0; 8];
                assert_eq!(
                    o.read_at(total as u64, &mut buf, reader.file.as_ref())
                        .unwrap(),
                    0
                );
            }
        }
    }

    /// Small writes are copied into pages: the object holds what it
    /// stores (its announced size exactly; an unknown size in whole
    /// pages, as charged), not the chunks it was given.
    #[test]
    fn memory_pages_hold_what_is_counted() {
        let data = vec![7u8; 2 << 20];
        let parts: Vec<&[u8]> = data.chunks(128).collect();
        for size in [Some(data.len() as u64), None] {
            let o = object(&Store::Memory, size, &[]);
            let mut charged = 0;
            for part in &parts {
                charged += o.charge_for(part.len());
                o.append(part).unwrap();
            }
            let Data::Memory(pages) = &o.data else {
                unreachable!()
            };
            let held: usize = pages.lock().unwrap().0.iter().map(Vec::capacity).sum();
            assert_eq!(held, data.len(), "{size:?}");
            assert_eq!(charged, data.len() as u64);
        }
        // A known size that is not a whole number of pages: the last page
        // is exactly what is left.
        let o = object(
            &Store::Memory,
            Some(PAGE as u64 + 700),
            &[&[1; 300], &[2; PAGE + 400]],
        );
        let Data::Memory(pages) = &o.data else {
            unreachable!()
        };
        let caps: Vec<usize> = pages.lock().unwrap().0.iter().map(Vec::capacity).collect();
        assert_eq!(caps, [PAGE, 700]);
    }

    /// Each disk object holds no descriptor once filled: only its readers
    /// do, each its own, closed when the reader goes.
    #[test]
    fn filled_disk_objects_hold_no_descriptor() {
        fn open_fds() -> usize {
            std::fs::read_dir("/proc/self/fd").unwrap().count()
        }
        let dir = tempfile::tempdir().unwrap();
        let before = open_fds();
        let objects: Vec<_> = (0..50)
            .map(|i| {
                let o = Object::create(&Store::Disk(dir.path().into()), i, Some(3), None).unwrap();
                o.append(b"abc").unwrap();
                o.finish(Ok(()));
                Arc::new(o)
            })
            .collect();
        assert!(open_fds() < before + 5, "{} > {before}", open_fds());
        let reader = objects[7].reader(512).unwrap();
        assert!(open_fds() < before + 6);
        drop(reader);
        assert_eq!(objects[7].readers(), 0);
    }

    /// A released disk object's file is gone (once; its open readers read
    /// on); a released memory object is still readable.
    #[test]
    fn released_disk_objects_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let disk = object(&Store::Disk(dir.path().into()), Some(3), &[b"abc"]);
        disk.finish(Ok(()));
        let reader = disk.reader(512).unwrap();
        assert!(!disk.is_gone());
        disk.release();
        disk.release();
        assert!(disk.is_gone());
        assert!(disk.reader(512).is_err());
        let mut buf = [0; 3];
        assert_eq!(disk.read_at(0, &mut buf, reader.file.as_ref()).unwrap(), 3);
        let memory = object(&Store::Memory, Some(3), &[b"abc"]);
        memory.release();
        assert!(!memory.is_gone());
        assert!(memory.reader(512).is_ok());
    }
}
