//! A health probe's HTTP response, as the probe's hand-written parser reads it.
//!
//! Input: byte 0 sets how many bytes each read returns (so line and chunk boundaries
//! fall everywhere), byte 1 picks the check (accepted statuses, a `body` text or not),
//! the rest is what the server answers before closing.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use holdfast::health::judge_http_answer;
use holdfast::health::probe::HttpCheck;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A server that sends `data` in pieces of `step` bytes, then closes.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (piece, rest) = self.data.split_at(n);
        buf.put_slice(piece);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let [step, pick, answer @ ..] = data else {
        return;
    };
    let check = HttpCheck {
        authority: "127.0.0.1:8080",
        path: "/health",
        status: match pick & 0b11 {
            0 => 200..=299,
            1 => 200..=200,
            2 => 100..=999,
            _ => 204..=304,
        },
        body: (pick & 0b100 != 0).then_some("ok"),
    };
    let stream = Trickle {
        data: answer,
        step: usize::from(*step) + 1,
    };
    let _ = runtime().block_on(judge_http_answer(stream, &check));
});
