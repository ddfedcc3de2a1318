//! Finding the panic or fatal error in the last lines a service printed: Go panics,
//! fatal errors, signal deaths and `SIGQUIT` dumps (`goroutine N [state]:` blocks), and
//! Rust panics (`thread '...' panicked at` with its `stack backtrace:`).
//!
//! Pure: lines in, the extracted block out. The last such block wins (the ring may hold
//! earlier runs' output too), and a block ends where the runtime's format ends, so the
//! lines after it (holdfast's notes) are not taken for frames.

/// At most this many lines of stack are kept: a dump of thousands of goroutines is in
/// the log file, the report holds its start.
const MAX_STACK: usize = 400;

/// Lines of message before the first goroutine block: beyond them, what follows a
/// panic that printed no trace is not its message.
const MAX_HEAD: usize = 20;

/// What kind of death the lines show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GoPanic,
    GoFatal,
    /// The Go runtime caught a fatal signal (`SIGSEGV: segmentation violation`).
    GoSignal,
    /// Every goroutine's stack, printed for `SIGQUIT` (a dump signal).
    GoDump,
    RustPanic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GoPanic => "go_panic",
            Kind::GoFatal => "go_fatal",
            Kind::GoSignal => "go_signal",
            Kind::GoDump => "go_dump",
            Kind::RustPanic => "rust_panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub kind: Kind,
    /// One line: `panic: index out of range [5] with length 3 at main.go:42`.
    pub summary: String,
    /// The block as printed, from its first line to the end of its frames.
    pub stack: Vec<String>,
}

/// The last panic, fatal error or stack dump in `lines` (the service's text, without
/// log stamps), if any.
pub fn extract<S: AsRef<str>>(lines: &[S]) -> Option<Extracted> {
    let lines: Vec<&str> = lines.iter().map(AsRef::as_ref).collect();
    let (start, kind) = lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, line)| start_kind(line).map(|kind| (i, kind)))?;
    let block = &lines[start..];
    let stack = match kind {
        Kind::RustPanic => rust_block(block),
        _ => go_block(block),
    };
    let summary = match kind {
        Kind::RustPanic => rust_summary(&stack),
        _ => go_summary(kind, &stack),
    };
    Some(Extracted {
        kind,
        summary,
        stack: stack
            .into_iter()
            .take(MAX_STACK)
            .map(str::to_owned)
            .collect(),
    })
}

/// The kind of block `line` starts, if it starts one.
fn start_kind(line: &str) -> Option<Kind> {
    if line.starts_with("panic: ") {
        Some(Kind::GoPanic)
    } else if line.starts_with("fatal error: ") {
        Some(Kind::GoFatal)
    } else if line.starts_with("SIGQUIT: quit") {
        Some(Kind::GoDump)
    } else if go_signal(line) {
        Some(Kind::GoSignal)
    } else if line.starts_with("thread '") && line.contains(" panicked at ") {
        Some(Kind::RustPanic)
    } else {
        None
    }
}

/// `SIGSEGV: segmentation violation`, `SIGBUS: bus error`: the runtime's report of a
/// fatal signal outside a panic.
fn go_signal(line: &str) -> bool {
    const FATAL: &[&str] = &[
        "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS",
    ];
    line.split_once(": ")
        .is_some_and(|(name, _)| FATAL.contains(&name))
}

/// A Go block: the message lines, then goroutine blocks (`goroutine N [...]:` followed
/// by frames, separated by blank lines), up to the first line that belongs to none.
fn go_block<'a>(block: &[&'a str]) -> Vec<&'a str> {
    let mut end = 0;
    let mut in_goroutines = false;
    for (i, line) in block.iter().enumerate() {
        let goroutine = line.starts_with("goroutine ") && line.ends_with(':');
        if goroutine {
            in_goroutines = true;
        } else if in_goroutines && !go_frame_line(line) || !in_goroutines && i > MAX_HEAD {
            break;
        }
        end = i + 1;
    }
    // Blank lines between goroutine blocks belong; trailing ones do not.
    while end > 0 && block[end - 1].trim().is_empty() {
        end -= 1;
    }
    block[..end].to_vec()
}

/// A line inside a goroutine block: a frame (`main.f(...)`), its location (indented),
/// `created by ...`, the register dump, or the blank line between blocks.
fn go_frame_line(line: &str) -> bool {
    line.trim().is_empty()
        || line.starts_with('\t')
        || line.starts_with("created by ")
        || line.starts_with("...")
        || line.contains('(')
        || register(line)
}

/// `rax    0xca`: a register of the dump after a fatal signal.
fn register(line: &str) -> bool {
    let mut words = line.split_whitespace();
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(_), Some(value), None) if value.starts_with("0x")
    )
}

/// `panic: <message> at <file:line>`: the location of the first frame that is not the
/// runtime's own.
fn go_summary(kind: Kind, stack: &[&str]) -> String {
    let head = stack.first().copied().unwrap_or_default();
    let message = match kind {
        Kind::GoDump => "SIGQUIT: goroutine dump".to_owned(),
        _ => head.to_owned(),
    };
    match go_location(stack) {
        Some(at) if kind != Kind::GoDump => format!("{message} at {at}"),
        _ => message,
    }
}

/// `main.go:42` of the first frame outside the runtime in the first goroutine block.
fn go_location(stack: &[&str]) -> Option<String> {
    let frames = stack
        .iter()
        .skip_while(|l| !(l.starts_with("goroutine ") && l.ends_with(':')))
        .skip(1);
    let mut function: Option<&str> = None;
    for line in frames {
        if line.trim().is_empty() {
            break;
        }
        if let Some(location) = line.strip_prefix('\t') {
            if function.is_some_and(|f| !f.starts_with("runtime.") && !f.starts_with("panic(")) {
                let file = location.split_whitespace().next()?;
                return Some(basename(file).to_owned());
            }
        } else {
            function = Some(line);
        }
    }
    None
}

/// A Rust panic: the `thread '...' panicked at` line, its message lines, and the
/// `stack backtrace:` with its frames when `RUST_BACKTRACE` was set.
fn rust_block<'a>(block: &[&'a str]) -> Vec<&'a str> {
    let mut end = 1;
    let mut in_backtrace = false;
    for (i, line) in block.iter().enumerate().skip(1) {
        if line.starts_with("stack backtrace:") {
            in_backtrace = true;
        } else if in_backtrace {
            if !line.starts_with(' ') {
                break;
            }
        } else if line.starts_with("note: ") || line.trim().is_empty() {
            // The hint about RUST_BACKTRACE ends a panic printed without one.
            break;
        }
        end = i + 1;
    }
    block[..end].to_vec()
}

/// `panic: <message> at <file:line:col>` from either form of the first line:
/// `thread 'main' panicked at src/main.rs:4:5:` + message (Rust 1.73 on), or
/// `thread 'main' panicked at 'message', src/main.rs:4:5` (before).
fn rust_summary(stack: &[&str]) -> String {
    let head = stack.first().copied().unwrap_or_default();
    // Rust 1.89 on puts the thread id between: `thread 'main' (42) panicked at`.
    let after = head
        .split_once(" panicked at ")
        .map_or("", |(_, rest)| rest);
    if let Some(location) = after.strip_suffix(':') {
        let message = stack.get(1).copied().unwrap_or_default();
        return format!("panic: {message} at {location}");
    }
    match after.rsplit_once(", ") {
        Some((message, location)) => {
            let message = message.trim_matches('\'');
            format!("panic: {message} at {location}")
        }
        None => format!("panic: {after}"),
    }
}

/// The function the thread `tid` crashed in, from gdb's `thread apply all bt`: the
/// first frame of that thread's stack that is not the C library's or Rust's signal
/// machinery (`raise`, `__pthread_kill_implementation`, `nix::sys::signal::raise`).
pub fn crashing_function(backtrace: &[String], tid: i32) -> Option<String> {
    let lwp = format!("(LWP {tid})");
    let header = |l: &String| l.starts_with("Thread ") && l.contains(&lwp);
    backtrace
        .iter()
        .skip_while(|l| !header(l))
        .skip(1)
        .take_while(|l| !l.starts_with("Thread "))
        .filter_map(|l| gdb_function(l))
        .find(|f| !machinery(f))
        .map(str::to_owned)
}

/// `demo_app::chaos::segfault` of `#5  0x0000... in demo_app::chaos::segfault () at ...`
/// (or of `#0  raise (sig=11) at ...`, a frame without an address).
fn gdb_function(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix('#')?;
    let rest = rest
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    let rest = match rest.split_once(" in ") {
        Some((address, function)) if address.starts_with("0x") => function,
        _ => rest,
    };
    rest.split(" (").next().filter(|f| !f.is_empty())
}

fn machinery(function: &str) -> bool {
    const SIGNALLING: &[&str] = &["raise", "gsignal", "abort", "??"];
    function.starts_with("__")
        || function.starts_with("nix::")
        || function.starts_with("libc::")
        || function.starts_with("std::sys")
        || SIGNALLING.contains(&function)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_PANIC: &str = "starting
listening on :8080
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.lookup(...)
\t/src/app/main.go:42
main.handle({0x4b2f60, 0x3})
\t/src/app/main.go:30 +0x1d
main.main()
\t/src/app/main.go:12 +0x25
exit status 2";

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_go_panic_gives_its_message_the_first_frame_of_main_and_the_goroutine_trace() {
        let got = extract(&lines(GO_PANIC)).expect("found");
        assert_eq!(got.kind, Kind::GoPanic);
        assert_eq!(
            got.summary,
            "panic: runtime error: index out of range [5] with length 3 at main.go:42"
        );
        assert_eq!(
            got.stack.first().map(String::as_str),
            Some(lines(GO_PANIC)[2])
        );
        assert!(
            got.stack
                .iter()
                .any(|l| l == "main.handle({0x4b2f60, 0x3})")
        );
        assert_eq!(
            got.stack.last().map(String::as_str),
            Some("\t/src/app/main.go:12 +0x25"),
            "the line after the trace is not a frame"
        );
    }

    #[test]
    fn a_nil_dereference_in_go_names_the_signal_and_skips_runtime_frames() {
        let text = "panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x47e0d4]

goroutine 1 [running]:
panic({0x4a0, 0x5})
\t/usr/lib/go/src/runtime/panic.go:770 +0x132
main.deref(...)
\t/src/app/main.go:7
main.main()
\t/src/app/main.go:11 +0x14";
        let got = extract(&lines(text)).expect("found");
        assert!(got.summary.ends_with("at main.go:7"), "{}", got.summary);
        assert!(got.stack[1].contains("pc=0x47e0d4"));
    }

    #[test]
    fn a_go_fatal_error_and_a_runtime_signal_are_recognised() {
        let fatal = "fatal error: all goroutines are asleep - deadlock!

goroutine 1 [chan receive]:
main.main()
\t/src/app/main.go:5 +0x2d";
        let got = extract(&lines(fatal)).expect("found");
        assert_eq!(got.kind, Kind::GoFatal);
        assert_eq!(
            got.summary,
            "fatal error: all goroutines are asleep - deadlock! at main.go:5"
        );
        let signal = "SIGSEGV: segmentation violation
PC=0x45d2a0 m=0 sigcode=1 addr=0x0

goroutine 1 [running]:
main.main()
\t/src/app/main.go:9 +0x10";
        let got = extract(&lines(signal)).expect("found");
        assert_eq!(got.kind, Kind::GoSignal);
        assert!(got.stack.iter().any(|l| l.starts_with("PC=0x45d2a0")));
    }

    #[test]
    fn a_sigquit_dump_keeps_every_goroutine_block() {
        let text = "SIGQUIT: quit
PC=0x46b0e1 m=0 sigcode=0

goroutine 1 [select (no cases)]:
main.stuck(...)
\t/src/app/main.go:20
main.main()
\t/src/app/main.go:25 +0x18

goroutine 6 [sleep]:
time.Sleep(0x3b9aca00)
\t/usr/lib/go/src/runtime/time.go:195 +0x125
main.worker()
\t/src/app/main.go:14 +0x1c
created by main.main in goroutine 1
\t/src/app/main.go:23 +0x2f

rax    0xca
rbx    0x0
holdfast exited 2";
        let got = extract(&lines(text)).expect("found");
        assert_eq!(got.kind, Kind::GoDump);
        assert!(got.stack.iter().any(|l| l == "main.stuck(...)"));
        assert!(got.stack.iter().any(|l| l == "main.worker()"));
        assert_ne!(
            got.stack.last().map(String::as_str),
            Some("holdfast exited 2")
        );
    }

    #[test]
    fn a_rust_panic_in_both_formats_gives_message_location_and_backtrace() {
        let text = "serving
thread 'tokio-rt-worker' (9057) panicked at src/chaos.rs:41:13:
nested panic: depth 3 reached
stack backtrace:
   0: rust_begin_unwind
   1: demo_app::chaos::nested
             at ./src/chaos.rs:41:13
   2: demo_app::main
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.";
        let got = extract(&lines(text)).expect("found");
        assert_eq!(got.kind, Kind::RustPanic);
        assert_eq!(
            got.summary,
            "panic: nested panic: depth 3 reached at src/chaos.rs:41:13"
        );
        assert!(
            got.stack
                .iter()
                .any(|l| l.contains("demo_app::chaos::nested"))
        );
        assert!(!got.stack.iter().any(|l| l.starts_with("note:")));

        let old = "thread 'main' panicked at 'boom', src/main.rs:2:5
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        let got = extract(&lines(old)).expect("found");
        assert_eq!(got.summary, "panic: boom at src/main.rs:2:5");
        assert_eq!(got.stack.len(), 1);
    }

    #[test]
    fn gdb_names_the_function_the_signalled_thread_crashed_in() {
        let backtrace: Vec<String> = "Thread 2 (Thread 0x7f (LWP 11)):
#0  syscall () at syscall.S:38
Thread 1 (Thread 0x7f (LWP 12)):
#0  __pthread_kill_implementation (threadid=<optimized out>) at ./nptl/pthread_kill.c:44
#1  0x00007f in raise (sig=11) at ../sysdeps/posix/raise.c:26
#2  0x000056 in nix::sys::signal::raise (signal=SIGSEGV) at src/sys/signal.rs:1
#3  0x000056 in demo_app::chaos::segfault () at crates/demo-app/src/chaos.rs:72
#4  0x000056 in demo_app::chaos::arm::{closure#2} () at crates/demo-app/src/chaos.rs:170"
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            crashing_function(&backtrace, 12).as_deref(),
            Some("demo_app::chaos::segfault")
        );
        assert_eq!(
            crashing_function(&backtrace, 11).as_deref(),
            Some("syscall")
        );
        assert_eq!(crashing_function(&backtrace, 99), None);
    }

    #[test]
    fn ordinary_output_has_nothing_to_extract_and_the_last_panic_wins() {
        assert_eq!(extract(&["hello", "SIGNAL: not one", "bye"]), None);
        let two = format!("{GO_PANIC}\nthread 'main' panicked at 'later', src/x.rs:1:1");
        assert_eq!(extract(&lines(&two)).expect("found").kind, Kind::RustPanic);
    }
}
