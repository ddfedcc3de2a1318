//! [`Capture`]: the pipes a service writes to, and the task that drains them into the
//! service's log file.
//!
//! Invariants:
//! - our copies of the write ends stay `O_CLOEXEC`, so only the process they are handed
//!   to (dup2'ed to fd 1 and 2) inherits them;
//! - one task owns the log file and the partial lines and reads the pipes; the supervisor
//!   only queues [`Op`]s for it (a note, the end of a run, new rotation settings), so it
//!   never waits for that task or for the disk. The task applies them in the order asked;
//! - the task never waits for the disk to recover (see `file`): reads continue, failed
//!   writes are dropped and counted;
//! - the end of a run is cut where it is asked for, before the next spawn: `end_run`
//!   takes what is left in the pipes (non-blocking reads, no disk) into its op. Reads of
//!   the pipes happen under one small lock (`Pipes::ends`, held for a read, never for a
//!   write or an await) that counts the ends of runs, so the task knows which ends come
//!   before the bytes it read: a dead run's unfinished line is its own record, never
//!   glued to the next run's first bytes;
//! - the task ends only at EOF on both pipes (once the `Capture` is dropped and every
//!   process holding a write end has closed it) with every queued op applied;
//! - a partial line waits for its newline at most [`PARTIAL_IDLE`]: a timer armed only
//!   while one is held, so a quiet writer costs no wake-ups;
//! - a quiet capture costs little memory: buffers are lent by [`super::spare`] only
//!   while a pipe is read or the file written, the ring of recent lines and the file
//!   itself come at the first line, and a pipe grows past the kernel's default only
//!   once its service writes faster than it is read;
//! - one read of a pipe is one stamp, one pass over its newlines into one buffer, and
//!   (normally) one write to the file.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::fcntl::{FcntlArg, fcntl};
use tokio::net::unix::pipe::Receiver;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::file::LogFile;
use super::journal;
use super::line::LineSplitter;
use super::pipes;
use super::record::{Ending, Prefix, Record, Stamp, Stream};
use super::ring::Ring;
use super::spare;
use crate::model::{LogForward, LogSpec, ServiceName};
use crate::unix::Pid;

/// Lines kept in memory for [`Capture::recent`].
const RECENT_LINES: usize = 256;
/// Bytes kept in memory for [`Capture::recent`].
const RECENT_BYTES: usize = 256 * 1024;
/// Pipe capacity asked for (best effort) once a service fills a read: absorbs its bursts
/// while the reader writes. Quiet services keep the kernel's default (64 KiB).
const PIPE_SIZE: i32 = 1024 * 1024;
/// Bytes read from a pipe at a time.
const READ_SIZE: usize = 256 * 1024;
/// A read of this much means bursts that could fill a pipe of the kernel's default size
/// (64 KiB) before it is read: the pipe grows to [`PIPE_SIZE`].
const GROW_AT: usize = 32 * 1024;
/// Reads at the end of a run: enough for a full pipe, and bounded even if a leftover
/// process keeps writing.
const END_OF_RUN_READS: usize = PIPE_SIZE as usize / READ_SIZE + 1;
/// How long a partial line waits for its newline before it is written as it is (marked
/// as unfinished): the tail of an overlong line or a prompt is not kept back for ever.
pub(crate) const PARTIAL_IDLE: Duration = Duration::from_secs(1);

/// Capture of one service's stdout and stderr, kept across restarts of the service.
///
/// Dropping it closes holdfast's write ends; the task applies what was queued, keeps
/// draining until EOF (grandchildren may still hold the pipes), writes a last partial
/// line, and ends. A daemon that exits first awaits [`Capture::flushed`].
#[derive(Debug)]
pub struct Capture {
    ops: mpsc::UnboundedSender<Op>,
    /// The read ends, shared with the task so that `end_run` can take what a run left.
    pipes: Arc<Pipes>,
    path: PathBuf,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// The identities of the two pipes (see [`Capture::pipe_ids`]).
    ids: [u64; 2],
}

#[derive(Debug)]
struct Pipes {
    stdout: Receiver,
    stderr: Receiver,
    /// Ends of runs asked for. Held across every read of either pipe, so that the bytes
    /// of a read are known to come after exactly this many ends.
    ends: Mutex<u64>,
}

impl Pipes {
    fn of(&self, stream: Stream) -> &Receiver {
        match stream {
            Stream::Stderr => &self.stderr,
            Stream::Stdout | Stream::Holdfast => &self.stdout,
        }
    }

    fn ends(&self) -> MutexGuard<'_, u64> {
        // A count is still right after a panic elsewhere: ignore poisoning.
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a note of holdfast's needs the log file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// Written now: the file is created for it if need be.
    Now,
    /// May wait in memory, in order, until the file is created for another reason (see
    /// [`Capture::note_routine`]).
    Routine,
}

/// What the capture's task is asked to do, in order with the output it reads.
///
/// Large payloads are boxed: the channel allocates its slots in blocks of 32 at once, and
/// every capture, however quiet, has one such block.
enum Op {
    /// holdfast's own line, stamped when it was said.
    Note(Box<Note>),
    /// A run ended (see [`Capture::end_run`]) and left these bytes (stdout, stderr).
    EndRun(Box<(Stamp, [Vec<u8>; 2])>),
    SetSpec(LogSpec),
    /// The main process of the run whose lines follow (for the journal's `SYSLOG_PID`).
    SetPid(Option<Pid>),
    /// Open the log file's path afresh (see [`Capture::reopen`]).
    Reopen,
    /// The last lines, once everything asked before is applied.
    Recent {
        n: usize,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Answered once everything asked before is written.
    Flush(oneshot::Sender<()>),
    /// Stop reading the pipes once everything asked before is written; answered with
    /// the partial lines held (stdout, stderr).
    Freeze(oneshot::Sender<[Vec<u8>; 2]>),
    /// Read the pipes again, these partial lines (stdout, stderr) held first.
    Thaw(Box<[Vec<u8>; 2]>),
}

struct Note {
    stamp: Stamp,
    text: String,
    urgency: Urgency,
}

/// Where every line goes: the file, the ring of recent lines, and the journal if asked.
struct Sink {
    file: LogFile,
    recent: Ring,
    forward: LogForward,
    journal: journal::Forward,
}

impl Sink {
    fn append(&mut self, prefix: &Prefix, stream: Stream, text: &[u8], ending: Ending) {
        let record = Record::new(prefix, text, ending);
        self.file.push(&record);
        self.recent.push(|line| record.push_to(line));
        self.forward(stream, text);
    }

    /// Like [`Sink::append`] for a line that later lines of the same read push out of
    /// the ring of recent lines anyway: it goes to the file (and journal) only.
    fn append_unkept(&mut self, prefix: &Prefix, stream: Stream, text: &[u8], ending: Ending) {
        self.file.push(&Record::new(prefix, text, ending));
        self.forward(stream, text);
    }

    fn forward(&self, stream: Stream, text: &[u8]) {
        match self.forward {
            LogForward::FileOnly => {}
            LogForward::Journald => self.journal.line(stream, text),
        }
    }

    fn note(&mut self, stamp: &Stamp, text: &str, urgency: Urgency) {
        let prefix = stamp.prefix(Stream::Holdfast);
        for part in text.lines() {
            let record = Record::new(&prefix, part.as_bytes(), Ending::Newline);
            match urgency {
                Urgency::Now => self.file.push(&record),
                Urgency::Routine => self.file.hold(&record),
            }
            self.recent.push(|line| record.push_to(line));
        }
    }
}

/// The partial line of one pipe.
struct Reader {
    lines: LineSplitter,
    /// False once EOF (or an error) was read.
    open: bool,
    /// Whether the pipe was asked to grow to [`PIPE_SIZE`].
    grown: bool,
    /// When the held partial line is written as it is, if one is held.
    idle: Option<Instant>,
}

impl Reader {
    fn new() -> Self {
        Self {
            lines: LineSplitter::default(),
            open: true,
            grown: false,
            idle: None,
        }
    }

    fn push(&mut self, sink: &mut Sink, stamp: &Stamp, stream: Stream, bytes: &[u8]) {
        let prefix = stamp.prefix(stream);
        // Lines with at least as many complete lines after them in this read as the ring
        // of recent lines holds would not stay there: they go to the file only.
        let ring_from = memchr::memrchr_iter(b'\n', bytes)
            .nth(RECENT_LINES)
            .map_or(0, |nl| nl + 1);
        let (unkept, kept) = bytes.split_at(ring_from);
        self.lines.push(unkept, |line, ending| {
            sink.append_unkept(&prefix, stream, line, ending);
        });
        self.lines.push(kept, |line, ending| {
            sink.append(&prefix, stream, line, ending)
        });
        self.idle = self
            .lines
            .is_pending()
            .then(|| Instant::now() + PARTIAL_IDLE);
    }

    /// Writes the partial line, if any, marked as unfinished.
    fn finish(&mut self, sink: &mut Sink, stamp: &Stamp, stream: Stream) {
        let prefix = stamp.prefix(stream);
        self.lines
            .finish(|line, ending| sink.append(&prefix, stream, line, ending));
        self.idle = None;
    }
}

impl Capture {
    /// The capture of `<log_dir>/<service>.log` (created 0640 at the first line to
    /// write, refusing a symlink; the log directory was made at start): creates the
    /// stdout and stderr pipes and spawns the task that drains them.
    ///
    /// # Panics
    /// If called outside a tokio runtime with IO enabled.
    pub fn open(log_dir: &Path, service: &ServiceName, spec: LogSpec) -> io::Result<Capture> {
        let (stdout_read, stdout) = pipes::pipe()?;
        let (stderr_read, stderr) = pipes::pipe()?;
        let pipes = [stdout_read, stderr_read, stdout, stderr];
        Self::adopt(log_dir, service, spec, pipes, [Vec::new(), Vec::new()])
    }

    /// The capture of existing pipes: stdout's and stderr's read ends, then their write
    /// ends (see [`Capture::handover_fds`]), with the `partial` lines (stdout, stderr)
    /// the previous reader held ([`Capture::freeze`]) before anything read from them. A
    /// new image of holdfast (`upgrade --self`) goes on reading the pipes its services
    /// write to.
    ///
    /// # Panics
    /// If called outside a tokio runtime with IO enabled.
    pub fn adopt(
        log_dir: &Path,
        service: &ServiceName,
        spec: LogSpec,
        [stdout_read, stderr_read, stdout, stderr]: [OwnedFd; 4],
        partial: [Vec<u8>; 2],
    ) -> io::Result<Capture> {
        let path = log_dir.join(format!("{service}.log"));
        let file = LogFile::new(path.clone(), spec)?;
        let ids = [pipes::id(&stdout)?, pipes::id(&stderr)?];
        let (ops_tx, ops) = mpsc::unbounded_channel();
        let pipes = Arc::new(Pipes {
            stdout: Receiver::from_owned_fd(stdout_read)?,
            stderr: Receiver::from_owned_fd(stderr_read)?,
            ends: Mutex::new(0),
        });
        let mut task = Task {
            sink: Sink {
                file,
                recent: Ring::new(RECENT_LINES, RECENT_BYTES),
                forward: spec.forward,
                journal: journal::Forward::new(service),
            },
            pipes: Arc::clone(&pipes),
            stdout: Reader::new(),
            stderr: Reader::new(),
            ops,
            ops_open: true,
            ends_done: 0,
            frozen: true,
        };
        task.thaw(partial);
        tokio::spawn(task.run());
        Ok(Capture {
            ops: ops_tx,
            pipes,
            path,
            stdout,
            stderr,
            ids,
        })
    }

    /// Write end of the stdout pipe, to be dup2'ed to fd 1 of the child. Our copy stays
    /// `O_CLOEXEC`.
    pub fn stdout(&self) -> BorrowedFd<'_> {
        self.stdout.as_fd()
    }

    /// Write end of the stderr pipe, to be dup2'ed to fd 2 of the child.
    pub fn stderr(&self) -> BorrowedFd<'_> {
        self.stderr.as_fd()
    }

    /// The fds of the pipes, in the order [`Capture::adopt`] takes them: what crosses
    /// `execve` at `upgrade --self`.
    pub fn handover_fds(&self) -> [RawFd; 4] {
        [
            self.pipes.stdout.as_raw_fd(),
            self.pipes.stderr.as_raw_fd(),
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
        ]
    }

    /// The capture of the pipes `ids` (see [`Capture::pipe_ids`]) that `holders` (the
    /// processes of a run that outlived a killed holdfast, adopted by the next one)
    /// still hold, with the output that waited in them. `None` when none holds them.
    ///
    /// # Panics
    /// If called outside a tokio runtime with IO enabled.
    pub fn reattach(
        log_dir: &Path,
        service: &ServiceName,
        spec: LogSpec,
        holders: &[crate::unix::Pid],
        ids: [u64; 2],
    ) -> io::Result<Option<Capture>> {
        match pipes::reattach(holders, ids)? {
            Some(fds) => {
                Self::adopt(log_dir, service, spec, fds, [Vec::new(), Vec::new()]).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The identities of the stdout and stderr pipes, for [`Capture::reattach`].
    pub fn pipe_ids(&self) -> [u64; 2] {
        self.ids
    }

    /// The current log file, `<log_dir>/<service>.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies new rotation settings (after a reload); they take effect at the next write.
    pub fn set_spec(&self, spec: LogSpec) {
        self.ask(Op::SetSpec(spec));
    }

    /// The main process of the service's run (after a spawn or a `MAINPID=`), named in
    /// the journal entries of the lines that follow; `None` when no one process is known
    /// to write them.
    pub fn set_pid(&self, pid: Option<Pid>) {
        self.ask(Op::SetPid(pid));
    }

    /// Writes what was read so far to the file open now, then opens the log file's path
    /// afresh: a file moved away (logrotate) is left complete and a new one is started.
    pub fn reopen(&self) {
        self.ask(Op::Reopen);
    }

    /// Queues holdfast's own line for the service log (tag `holdfast`), e.g.
    /// `exited 3, restarting in 2s`, stamped now: it is written at once, creating the
    /// file if need be. Each line of a multi-line note becomes its own record. Never
    /// waits.
    pub fn note(&self, line: &str) {
        self.ask_note(line, Urgency::Now);
    }

    /// Like [`Capture::note`] for a routine line (`spawned pid 42`), which may wait in
    /// memory until the file is created for another reason: the service's first output,
    /// the end of a run, a [`Capture::note`], [`Capture::flushed`]. A service that never
    /// prints and keeps running gets no log file. [`Capture::recent`] has it at once.
    pub fn note_routine(&self, line: &str) {
        self.ask_note(line, Urgency::Routine);
    }

    fn ask_note(&self, line: &str, urgency: Urgency) {
        self.ask(Op::Note(Box::new(Note {
            stamp: Stamp::now(),
            text: line.to_owned(),
            urgency,
        })));
    }

    /// A run of the service ended: takes what its processes left in the pipes, for the
    /// task to write with each stream's unfinished last line as a record of its own
    /// (marked as such), so it is neither glued to the next run's first line nor stamped
    /// after its start. Called when the run's exit is handled and again before the next
    /// spawn. Reads without blocking and writes nothing.
    pub fn end_run(&self) {
        let stamp = Stamp::now();
        let left = {
            let mut ends = self.pipes.ends();
            *ends += 1;
            [Stream::Stdout, Stream::Stderr].map(|stream| read_left(self.pipes.of(stream)))
        };
        self.ask(Op::EndRun(Box::new((stamp, left))));
    }

    /// The last `n` lines (at most 256), formatted as in the file, oldest first, once
    /// everything asked before (notes, ends of runs) is applied. Lines are kept even when
    /// the disk refused them, so crash reports see them. Empty if the task is gone.
    pub fn recent(&self, n: usize) -> impl Future<Output = Vec<String>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        self.ask(Op::Recent { n, reply });
        async move { answer.await.unwrap_or_default() }
    }

    /// Resolves once everything asked before is written (or dropped, on a failing disk):
    /// the daemon awaits it before it exits, since the runtime ends the task with it.
    pub fn flushed(&self) -> impl Future<Output = ()> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        self.ask(Op::Flush(reply));
        async move {
            let _ = answer.await;
        }
    }

    /// Stops reading the pipes once everything asked before is written, and gives the
    /// partial lines held (stdout, stderr) unwritten: what the services write from now on
    /// stays in the pipes, for the next image of holdfast (`upgrade --self`), which takes
    /// the partial lines with [`Capture::thaw`]. Nothing read is lost at the exec.
    pub fn freeze(&self) -> impl Future<Output = [Vec<u8>; 2]> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        self.ask(Op::Freeze(reply));
        async move { answer.await.unwrap_or_default() }
    }

    /// Reads the pipes again (after [`Capture::freeze`], here or in the previous image),
    /// `partial` (stdout, stderr) held first as the start of each stream's next line.
    pub fn thaw(&self, partial: [Vec<u8>; 2]) {
        self.ask(Op::Thaw(Box::new(partial)));
    }

    fn ask(&self, op: Op) {
        // The task lives until this `Capture` is dropped: the send cannot fail.
        let _ = self.ops.send(op);
    }
}

/// A read buffer of [`READ_SIZE`] bytes, lent until [`give_back_read_buf`].
fn read_buf() -> Vec<u8> {
    let mut buf = spare::take(&spare::READS);
    // Only a new buffer is filled: a returned one keeps its length.
    buf.resize(READ_SIZE, 0);
    buf
}

fn give_back_read_buf(buf: Vec<u8>) {
    spare::give_back(&spare::READS, buf);
}

/// What is in `pipe` now, up to a full pipe and a bit: bounded even if a leftover
/// process keeps writing.
fn read_left(pipe: &Receiver) -> Vec<u8> {
    let mut left = Vec::new();
    let mut buf = read_buf();
    for _ in 0..END_OF_RUN_READS {
        // A plain read, past tokio's readiness cache: the reactor may not have seen the
        // last bytes yet, but they are in the pipe.
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left.extend_from_slice(&buf[..n]),
        }
    }
    give_back_read_buf(buf);
    left
}

/// The capture's task: the only owner of the log file and the partial lines.
struct Task {
    sink: Sink,
    pipes: Arc<Pipes>,
    stdout: Reader,
    stderr: Reader,
    ops: mpsc::UnboundedReceiver<Op>,
    /// False once the `Capture` is dropped and every op applied.
    ops_open: bool,
    /// Ends of runs applied.
    ends_done: u64,
    /// The pipes are not read (see [`Capture::freeze`]).
    frozen: bool,
}

impl Task {
    /// Applies ops and reads both pipes until EOF. Among what is ready the pick is
    /// random (no `biased`): a service that floods stdout must not starve its stderr (its
    /// lines would be stamped late), nor the notes.
    async fn run(mut self) {
        while self.ops_open || self.stdout.open || self.stderr.open {
            let idle = [self.stdout.idle, self.stderr.idle]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                op = self.ops.recv(), if self.ops_open => match op {
                    Some(op) => self.apply(op),
                    None => self.ops_open = false,
                },
                ready = self.pipes.stdout.readable(), if self.stdout.open && !self.frozen => {
                    self.on_readable(Stream::Stdout, ready).await;
                }
                ready = self.pipes.stderr.readable(), if self.stderr.open && !self.frozen => {
                    self.on_readable(Stream::Stderr, ready).await;
                }
                () = sleep_until(idle) => self.write_idle(),
            }
        }
        // Nothing is left behind in memory, held notes included.
        self.sink.file.write_held();
    }

    /// The reader of `stream` and the sink, borrowed together.
    fn parts(&mut self, stream: Stream) -> (&mut Reader, &mut Sink) {
        let reader = match stream {
            Stream::Stderr => &mut self.stderr,
            Stream::Stdout | Stream::Holdfast => &mut self.stdout,
        };
        (reader, &mut self.sink)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Note(note) => self.sink.note(&note.stamp, &note.text, note.urgency),
            Op::EndRun(end) => {
                let (stamp, left) = *end;
                self.end_run(&stamp, &left);
                self.ends_done += 1;
                self.sink.journal.set_pid(None);
                // How a run ended is worth a file even for a service that never printed.
                self.sink.file.write_held();
            }
            Op::SetSpec(spec) => {
                self.sink.forward = spec.forward;
                self.sink.file.set_spec(spec);
            }
            Op::SetPid(pid) => self.sink.journal.set_pid(pid),
            Op::Reopen => self.sink.file.reopen(),
            Op::Recent { n, reply } => {
                let _ = reply.send(self.sink.recent.last(n));
            }
            Op::Flush(reply) => {
                self.sink.file.write_held();
                let _ = reply.send(());
            }
            Op::Freeze(reply) => {
                self.sink.file.write_held();
                self.frozen = true;
                self.stdout.idle = None;
                self.stderr.idle = None;
                let _ = reply.send([self.stdout.lines.take(), self.stderr.lines.take()]);
            }
            Op::Thaw(partial) => self.thaw(*partial),
        }
        self.sink.file.flush();
    }

    /// Reads the pipes again, `partial` (stdout, stderr) held first.
    fn thaw(&mut self, partial: [Vec<u8>; 2]) {
        self.frozen = false;
        let stamp = Stamp::now();
        for (stream, bytes) in [Stream::Stdout, Stream::Stderr].into_iter().zip(partial) {
            let (reader, sink) = self.parts(stream);
            reader.push(sink, &stamp, stream, &bytes);
        }
    }

    /// Writes what the ended run left in the pipes, and its unfinished lines.
    fn end_run(&mut self, stamp: &Stamp, left: &[Vec<u8>; 2]) {
        for (stream, bytes) in [Stream::Stdout, Stream::Stderr].into_iter().zip(left) {
            let (reader, sink) = self.parts(stream);
            reader.push(sink, stamp, stream, bytes);
            reader.finish(sink, stamp, stream);
        }
    }

    /// Applies queued ops until `ends` ends of runs are done: bytes read after them
    /// belong after them.
    async fn catch_up(&mut self, ends: u64) {
        while self.ends_done < ends {
            match self.ops.recv().await {
                Some(op) => self.apply(op),
                None => break,
            }
        }
    }

    async fn on_readable(&mut self, stream: Stream, ready: io::Result<()>) {
        if let Err(err) = ready {
            tracing::error!(?stream, "failed to wait on log pipe: {err}");
            self.close(stream);
            return;
        }
        // What was asked before this read comes before its bytes: a note queued between
        // two runs ("exited", "spawned") must not land after the next run's first line
        // because the select happened to pick the pipe first.
        while let Ok(op) = self.ops.try_recv() {
            self.apply(op);
        }
        // One of them froze the capture (`upgrade --self`): its partial lines are handed
        // on, and what the pipe holds now is the next image's to read after them.
        if self.frozen {
            return;
        }
        let mut buf = read_buf();
        let (read, ends) = {
            let ends = self.pipes.ends();
            (self.pipes.of(stream).try_read(&mut buf), *ends)
        };
        self.catch_up(ends).await;
        match read {
            Ok(0) => self.close(stream),
            Ok(n) => {
                if n >= GROW_AT {
                    self.grow(stream);
                }
                let (reader, sink) = self.parts(stream);
                reader.push(sink, &Stamp::now(), stream, &buf[..n]);
                sink.file.flush();
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => {
                tracing::error!(?stream, "failed to read log pipe: {err}");
                self.close(stream);
            }
        }
        give_back_read_buf(buf);
    }

    /// The service writes in bursts: its pipe gets room for them, once. Best effort: the
    /// default works too.
    fn grow(&mut self, stream: Stream) {
        let reader = match stream {
            Stream::Stderr => &mut self.stderr,
            Stream::Stdout | Stream::Holdfast => &mut self.stdout,
        };
        if !reader.grown {
            reader.grown = true;
            let _ = fcntl(self.pipes.of(stream), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
    }

    /// EOF (or a broken pipe): the partial line is written, the pipe is not read again.
    fn close(&mut self, stream: Stream) {
        let (reader, sink) = self.parts(stream);
        reader.finish(sink, &Stamp::now(), stream);
        reader.open = false;
        sink.file.flush();
    }

    /// A partial line waited [`PARTIAL_IDLE`] for its newline: it is written as it is.
    fn write_idle(&mut self) {
        let now = Instant::now();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let (reader, sink) = self.parts(stream);
            if reader.idle.is_some_and(|at| at <= now) {
                reader.finish(sink, &Stamp::now(), stream);
            }
        }
        self.sink.file.flush();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::*;
    use crate::logs::file::rotated_path;
    use crate::logs::testutil::{TempDir, read_or_empty, wait_until};

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn spec(max_size: u64, keep: u32) -> LogSpec {
        LogSpec {
            max_size,
            keep,
            forward: crate::model::LogForward::FileOnly,
        }
    }

    /// Runs `script` with stdout/stderr on the capture's pipes. The `Command` (and with it
    /// our dups of the write ends) is dropped before returning, so only the child holds
    /// them.
    fn spawn_sh(capture: &Capture, script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(capture.stdout().try_clone_to_owned().unwrap())
            .stderr(capture.stderr().try_clone_to_owned().unwrap())
            .spawn()
            .expect("/bin/sh can be spawned")
    }

    /// Whether the last line written (or dropped) ends with `suffix`.
    fn last_ends_with(capture: &Capture, suffix: &str) -> impl Future<Output = bool> + use<> {
        let recent = capture.recent(1);
        let suffix = suffix.to_owned();
        async move { recent.await.first().is_some_and(|l| l.ends_with(&suffix)) }
    }

    /// Waits for the child off the runtime thread, so the reader task keeps draining.
    async fn wait_child(mut child: Child, secs: u64) -> std::process::ExitStatus {
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(Duration::from_secs(secs), waiting)
            .await
            .unwrap_or_else(|_| panic!("child still running after {secs}s: it was blocked"))
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn output_of_a_real_child_is_captured_with_timestamps_and_stream_tags() {
        let dir = TempDir::new("capture-child");
        let log_dir = dir.path().join("logs");
        let capture = Capture::open(&log_dir, &name("web"), spec(1 << 20, 2)).unwrap();
        assert_eq!(capture.path(), log_dir.join("web.log"));

        capture.note("started pid 42");
        let child = spawn_sh(
            &capture,
            "echo hello; echo oops >&2; printf 'bad \\377 byte\\n'; printf partial",
        );
        assert!(wait_child(child, 60).await.success());
        let path = capture.path().to_owned();
        wait_until("both streams are in the file", 30, || {
            let log = read_or_empty(&path);
            ready(log.contains("hello") && log.contains("oops") && log.contains("byte"))
        })
        .await;
        // Made with the first file in it (the daemon makes it at start).
        let mode = std::fs::metadata(&log_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "log dir is at most 0750, got {mode:o}");
        drop(capture);
        wait_until("the partial line is written at EOF", 30, || {
            ready(read_or_empty(&path).contains("partial"))
        })
        .await;
        let log = read_or_empty(&path);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 5, "{log}");
        for line in &lines {
            let (stamp, rest) = line.split_at(24);
            humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"));
            assert!(stamp.ends_with('Z'), "UTC: {line}");
            assert_eq!(&rest[..1], " ");
        }
        assert!(
            lines[0].ends_with(" holdfast started pid 42"),
            "{}",
            lines[0]
        );
        assert!(
            lines.iter().any(|l| l.ends_with(" stdout   hello")),
            "{log}"
        );
        assert!(lines.iter().any(|l| l.ends_with(" stderr   oops")), "{log}");
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(" stdout   bad \u{fffd} byte")),
            "{log}"
        );
        assert!(
            lines[4].ends_with(" stdout   partial [no newline]"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn end_run_writes_the_unfinished_line_still_in_the_pipe_before_the_next_run() {
        let dir = TempDir::new("capture-end-run");
        let capture = Capture::open(dir.path(), &name("crashy"), spec(1 << 20, 2)).unwrap();
        for run in 0..3 {
            capture.note(&format!("spawned run {run}"));
            let child = spawn_sh(&capture, "echo one; printf 'FATAL: x'; exit 3");
            assert_eq!(wait_child(child, 60).await.code(), Some(3));
            // Right after the exit: the reader task may not have read a byte yet.
            capture.end_run();
            capture.note(&format!("exited run {run}"));
        }
        let recent = capture.recent(12).await;
        let texts: Vec<&str> = recent.iter().map(|l| &l[25..]).collect();
        let run = |n: usize| {
            [
                format!("holdfast spawned run {n}"),
                "stdout   one".to_owned(),
                "stdout   FATAL: x [no newline]".to_owned(),
                format!("holdfast exited run {n}"),
            ]
        };
        let expected: Vec<String> = (0..3).flat_map(run).collect();
        assert_eq!(texts, expected, "{recent:#?}");
    }

    /// The capture's task cannot run while this test holds the only runtime thread, as a
    /// writer stuck on a slow disk would, and a note is taken while the pipes' lock is
    /// held: notes and the end of a run are taken without waiting, and written in the
    /// order asked once the task runs.
    #[tokio::test(flavor = "current_thread")]
    async fn notes_are_taken_while_the_capture_task_is_held_up_and_keep_their_order() {
        let dir = TempDir::new("capture-held-up");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        // The one lock of a capture (its pipes' reads) held by someone else: a note does
        // not need it.
        let held = capture.pipes.ends();
        capture.note("spawned run 0");
        drop(held);
        let mut child = spawn_sh(&capture, "echo one; printf 'FATAL: x'");
        // Blocks the runtime's one thread: the task reads and writes nothing meanwhile.
        assert!(child.wait().unwrap().success());
        capture.end_run();
        capture.note("exited run 0");
        assert_eq!(
            read_or_empty(capture.path()),
            "",
            "nothing is written by the caller"
        );
        capture.flushed().await;
        let log = read_or_empty(capture.path());
        let texts: Vec<&str> = log.lines().map(|l| &l[25..]).collect();
        assert_eq!(
            texts,
            [
                "holdfast spawned run 0",
                "stdout   one",
                "stdout   FATAL: x [no newline]",
                "holdfast exited run 0",
            ],
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_partial_line_is_written_once_its_writer_goes_quiet() {
        let dir = TempDir::new("capture-idle");
        let capture = Capture::open(dir.path(), &name("quiet"), spec(1 << 20, 2)).unwrap();
        let child = spawn_sh(&capture, "printf 'Password: '; exec sleep 1000");
        wait_until("the prompt is written without its newline", 30, || {
            last_ends_with(&capture, "stdout   Password:  [no newline]")
        })
        .await;
        let mut child = child;
        child.kill().unwrap();
        wait_child(child, 60).await;
    }

    #[tokio::test]
    async fn recent_returns_the_last_lines_including_notes() {
        let dir = TempDir::new("capture-recent");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        let child = spawn_sh(&capture, "for i in $(seq 1 300); do echo line $i; done");
        assert!(wait_child(child, 60).await.success());
        wait_until("the last line is read", 30, || {
            last_ends_with(&capture, "line 300")
        })
        .await;
        capture.note("exited 0\nnot restarting");
        let recent = capture.recent(3).await;
        assert!(recent[0].ends_with("stdout   line 300"), "{recent:?}");
        assert!(recent[1].ends_with("holdfast exited 0"), "{recent:?}");
        assert!(recent[2].ends_with("holdfast not restarting"), "{recent:?}");
        assert_eq!(
            capture.recent(1000).await.len(),
            RECENT_LINES,
            "the ring is bounded"
        );
    }

    #[tokio::test]
    async fn a_child_writing_50_mb_as_fast_as_it_can_completes() {
        let dir = TempDir::new("capture-50mb");
        let max = 4 << 20;
        let capture = Capture::open(dir.path(), &name("noisy"), spec(max, 2)).unwrap();
        let child = spawn_sh(
            &capture,
            "line=$(head -c 999 /dev/zero | tr '\\0' x); \
             yes \"$line\" | head -c 50000000; \
             yes \"$line\" | head -c 1000000 >&2; echo ERR-END >&2; echo END",
        );
        assert!(
            wait_child(child, 300).await.success(),
            "the child exits by itself"
        );
        // Each pipe is read in order, but the two are not ordered with each other: all
        // is read once both last lines are in the log (the last two files hold them).
        let path = capture.path().to_owned();
        let both_ends = |path: &Path| {
            let text = read_or_empty(path) + &read_or_empty(&rotated_path(path, 1));
            text.contains(" stderr   ERR-END\n") && text.contains(" stdout   END\n")
        };
        wait_until("all output is read", 120, || {
            let done = both_ends(&path);
            async move { done }
        })
        .await;
        for k in 0..=2 {
            let file = if k == 0 {
                path.clone()
            } else {
                rotated_path(&path, k)
            };
            let size = std::fs::metadata(&file).unwrap().len();
            assert!(
                size <= max,
                "{} is {size} bytes, over {max}",
                file.display()
            );
        }
        assert!(!rotated_path(&path, 3).exists(), "keep = 2");
        assert!(both_ends(&path));
    }

    #[tokio::test]
    async fn routine_notes_wait_in_memory_until_the_service_prints_and_come_first() {
        let dir = TempDir::new("capture-lazy-output");
        let capture = Capture::open(dir.path(), &name("quiet"), spec(1 << 20, 2)).unwrap();
        capture.note_routine("quiet: spawned pid 42");
        let recent = capture.recent(5).await;
        assert!(
            recent[0].ends_with(" holdfast quiet: spawned pid 42"),
            "recent lines have it at once: {recent:?}"
        );
        assert!(
            !capture.path().exists(),
            "no file for a service that has not printed"
        );

        let child = spawn_sh(&capture, "echo hello");
        assert!(wait_child(child, 60).await.success());
        wait_until("the output is read", 30, || {
            last_ends_with(&capture, "stdout   hello")
        })
        .await;
        let log = read_or_empty(capture.path());
        let texts: Vec<&str> = log.lines().map(|l| &l[25..]).collect();
        assert_eq!(texts, ["holdfast quiet: spawned pid 42", "stdout   hello"]);
        let mode = std::fs::metadata(capture.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & !0o640, 0, "no more than 0640, got {mode:o}");
    }

    #[tokio::test]
    async fn routine_notes_are_written_at_the_end_of_a_run_at_a_written_note_and_at_flush() {
        let dir = TempDir::new("capture-lazy-notes");
        let texts = |capture: &Capture| -> Vec<String> {
            read_or_empty(capture.path())
                .lines()
                .map(|l| l[25..].to_owned())
                .collect()
        };

        let ended = Capture::open(dir.path(), &name("ended"), spec(1 << 20, 2)).unwrap();
        ended.note_routine("spawned pid 1");
        ended.end_run();
        ended.recent(1).await;
        assert_eq!(texts(&ended), ["holdfast spawned pid 1"]);

        let noted = Capture::open(dir.path(), &name("noted"), spec(1 << 20, 2)).unwrap();
        noted.note_routine("spawned pid 2");
        noted.note("health ok -> degraded");
        noted.note_routine("started (pid 2)");
        noted.recent(1).await;
        assert_eq!(
            texts(&noted),
            [
                "holdfast spawned pid 2",
                "holdfast health ok -> degraded",
                "holdfast started (pid 2)"
            ],
            "once the file exists, every note is written at once"
        );

        let flushed = Capture::open(dir.path(), &name("flushed"), spec(1 << 20, 2)).unwrap();
        flushed.note_routine("spawned pid 3");
        flushed.flushed().await;
        assert_eq!(texts(&flushed), ["holdfast spawned pid 3"]);
    }

    #[tokio::test]
    async fn a_symlinked_log_file_is_refused() {
        let dir = TempDir::new("capture-symlink");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("web.log")).unwrap();
        let err = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[tokio::test]
    async fn a_reload_can_change_rotation_settings() {
        let dir = TempDir::new("capture-set-spec");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        for i in 0..10 {
            capture.note(&format!("note {i}"));
        }
        capture.flushed().await;
        assert!(!rotated_path(capture.path(), 1).exists());
        capture.set_spec(spec(100, 1));
        capture.note("after reload");
        capture.flushed().await;
        assert!(
            rotated_path(capture.path(), 1).exists(),
            "rotated at the next write"
        );
        assert!(read_or_empty(capture.path()).ends_with("holdfast after reload\n"));
    }

    #[tokio::test]
    async fn after_a_reopen_lines_go_to_a_new_file_at_the_path() {
        let dir = TempDir::new("capture-reopen");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        capture.note("before the move");
        capture.flushed().await;
        let moved = dir.path().join("moved.log");
        std::fs::rename(capture.path(), &moved).unwrap();
        capture.reopen();
        capture.note("after the move");
        capture.flushed().await;
        let old = read_or_empty(&moved);
        let new = read_or_empty(capture.path());
        assert!(old.contains("before the move") && !old.contains("after the move"));
        assert!(new.contains("after the move") && !new.contains("before the move"));
    }

    /// A tmpfs mounted for the test, unmounted on drop.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Result<Self, String> {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
            Ok(Self(dir.to_owned()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            // Lazy: the reader task may still hold the log file open.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[tokio::test]
    async fn a_full_disk_drops_output_without_blocking_the_child_and_says_so_later() {
        let dir = TempDir::new("capture-disk-full");
        let mnt = dir.path().join("tmpfs");
        let tmpfs = match Tmpfs::mount(&mnt, "64k") {
            Ok(tmpfs) => tmpfs,
            Err(reason) => {
                eprintln!("skipped: cannot mount a tmpfs: {reason}");
                return;
            }
        };
        let ballast = mnt.join("ballast");
        std::fs::write(&ballast, vec![0u8; 40 * 1024]).unwrap();
        let capture = Capture::open(&mnt.join("logs"), &name("web"), spec(10 << 20, 1)).unwrap();
        let child = spawn_sh(
            &capture,
            "yes 'a line that will not fit on this tiny disk' | head -n 20000; echo END",
        );
        assert!(
            wait_child(child, 120).await.success(),
            "the child is never blocked"
        );
        wait_until("all output is read", 60, || {
            last_ends_with(&capture, "stdout   END")
        })
        .await;
        let before = read_or_empty(capture.path());
        assert!(!before.contains("dropped"), "nothing can be written yet");

        std::fs::remove_file(&ballast).unwrap();
        capture.note("disk has space again");
        capture.flushed().await;
        let log = read_or_empty(capture.path());
        let dropped: Vec<&str> = log.lines().filter(|l| l.contains("dropped")).collect();
        assert_eq!(
            dropped.len(),
            1,
            "one line about dropped output: {dropped:?}"
        );
        let words: Vec<&str> = dropped[0].split_whitespace().collect();
        assert_eq!(words[1..3], ["holdfast", "dropped"], "{}", dropped[0]);
        let bytes: u64 = words[3].parse().unwrap();
        assert!(
            bytes > 500_000,
            "most of the 20000 lines were dropped: {}",
            dropped[0]
        );
        assert!(
            dropped[0].ends_with("bytes of output (no space left on device)"),
            "{}",
            dropped[0]
        );
        assert!(
            log.ends_with("holdfast disk has space again\n"),
            "the note follows it"
        );
        for line in log.lines() {
            humantime::parse_rfc3339(&line[..24])
                .unwrap_or_else(|e| panic!("every line starts with a timestamp ({e}): {line:?}"));
        }
        drop(capture);
        drop(tmpfs);
    }
}
