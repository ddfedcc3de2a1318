//! State shared by the HTTP handlers, the chaos timers, the watchdog and the signal
//! loop. Everything is behind atomics or short-held mutexes; no lock is held across
//! an await point.

use axum::http::HeaderValue;
use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

/// What `GET /health` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 "ok".
    Ok,
    /// 503 "failing".
    Failing,
    /// Never answers, like a service stuck on a dependency.
    Hanging,
}

#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub ignore_sigterm: bool,
    /// `--build-id`, ready to be sent as the `X-Build-Id` header.
    pub build_id: HeaderValue,
    requests: AtomicU64,
    health: Mutex<Health>,
    hung: AtomicBool,
    draining: AtomicBool,
    /// Memory kept alive on purpose by `/alloc` and `--eat-memory`.
    hoard: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    pub fn new(health: Health, ignore_sigterm: bool, build_id: HeaderValue) -> Self {
        Shared {
            started: Instant::now(),
            ignore_sigterm,
            build_id,
            requests: AtomicU64::new(0),
            health: Mutex::new(health),
            hung: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            hoard: Mutex::new(Vec::new()),
        }
    }

    /// Counts one request and returns the new total.
    pub fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        *self
            .health
            .lock()
            .expect("health lock is never poisoned: no panics while held")
    }

    pub fn set_health(&self, health: Health) {
        *self
            .health
            .lock()
            .expect("health lock is never poisoned: no panics while held") = health;
    }

    /// Once hung, the app never answers a request, pings the watchdog or honours
    /// SIGTERM again. There is no way back, as with a real deadlock.
    pub fn hang(&self) {
        self.hung.store(true, Ordering::SeqCst);
    }

    pub fn is_hung(&self) -> bool {
        self.hung.load(Ordering::SeqCst)
    }

    /// From now on every response carries `Connection: close`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Allocates `bytes`, writes every byte so the pages are really resident, keeps
    /// them, and returns the total now held.
    pub fn hoard(&self, bytes: usize) -> usize {
        let block = vec![0xa5_u8; bytes];
        let mut hoard = self
            .hoard
            .lock()
            .expect("hoard lock is never poisoned: no panics while held");
        hoard.push(block);
        hoard.iter().map(Vec::len).sum()
    }
}
