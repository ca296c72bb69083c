//! The table of native calls: admission, the queue Python takes from, and the replies Python gives.
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// What Python answered for a call.
pub enum Reply {
    Message(Bytes),
    Status(i32, String),
}

/// A call taken by Python: (call id, method index, request message, seconds left until its deadline).
pub type Taken = (u64, usize, Bytes, Option<f64>);

struct Entry {
    method: usize,
    request: Option<Bytes>, // None once taken: Python computes it
    deadline: Option<Instant>,
    reply: Option<oneshot::Sender<Reply>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    entries: HashMap<u64, Entry>, // every admitted call, queued or computing
    queue: VecDeque<u64>,
    events: HashMap<(usize, &'static str), u64>,
    stopped: bool,
}

pub struct Calls {
    max_admitted: usize,
    state: Mutex<State>,
    queued: Condvar,
}

pub enum Admission {
    Admitted(u64, oneshot::Receiver<Reply>),
    Full,
}

impl Calls {
    pub fn new(max_admitted: usize) -> Self {
        Calls {
            max_admitted,
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue a call if there is room; a full table counts a RESOURCE_EXHAUSTED event.
    pub fn admit(&self, method: usize, request: Bytes, deadline: Option<Instant>) -> Admission {
        let mut state = self.lock();
        if state.entries.len() >= self.max_admitted {
            drop(state);
            self.count(method, "RESOURCE_EXHAUSTED");
            return Admission::Full;
        }
        state.next_id += 1;
        let id = state.next_id;
        let (sender, receiver) = oneshot::channel();
        state.entries.insert(
            id,
            Entry {
                method,
                request: Some(request),
                deadline,
                reply: Some(sender),
            },
        );
        state.queue.push_back(id);
        drop(state);
        self.queued.notify_one();
        Admission::Admitted(id, receiver)
    }

    /// Up to `max_calls` queued calls, waiting up to `timeout` for the first one; none at once when there are
    /// events to count (the caller counts them before it waits again).
    pub fn take(&self, max_calls: usize, timeout: Duration) -> Vec<Taken> {
        let until = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            if state.stopped {
                return Vec::new();
            }
            let taken = Self::pop(&mut state, max_calls);
            if !taken.is_empty() || !state.events.is_empty() {
                return taken;
            }
            let now = Instant::now();
            let left = match until {
                Some(until) if until <= now => return Vec::new(),
                Some(until) => until - now,
                None => Duration::from_secs(3600),
            };
            state = self
                .queued
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn pop(state: &mut State, max_calls: usize) -> Vec<Taken> {
        let now = Instant::now();
        let mut taken = Vec::new();
        while taken.len() < max_calls {
            let Some(id) = state.queue.pop_front() else { break };
            let Some(entry) = state.entries.get_mut(&id) else {
                continue;
            }; // cancelled or expired
            let cancelled = entry.reply.as_ref().is_none_or(|s| s.is_closed());
            let expired = entry.deadline.is_some_and(|d| d <= now);
            if cancelled || expired {
                continue; // its handler drops it (and counts an expiry) in a moment
            }
            let left = entry.deadline.map(|d| (d - now).as_secs_f64());
            if let Some(request) = entry.request.take() {
                taken.push((id, entry.method, request, left));
            }
        }
        taken
    }

    /// Python's reply: releases the call's place; unknown ids are ignored.
    pub fn finish(&self, id: u64, reply: Reply) {
        let entry = self.lock().entries.remove(&id);
        if let Some(sender) = entry.and_then(|e| e.reply) {
            let _ = sender.send(reply);
        }
    }

    /// The caller left (cancelled, or its deadline passed): a queued call is dropped and its place released; a
    /// call Python computes keeps its place until Python answers it. True if a queued call was dropped.
    pub fn abandon(&self, id: u64) -> bool {
        let mut state = self.lock();
        let queued = state.entries.get(&id).is_some_and(|e| e.request.is_some());
        if queued {
            state.entries.remove(&id);
        }
        queued
    }

    /// An answer the front gave itself, for events(); a waiting take() returns so that it is counted at once.
    pub fn count(&self, method: usize, status: &'static str) {
        *self.lock().events.entry((method, status)).or_default() += 1;
        self.queued.notify_one();
    }

    pub fn events(&self) -> Vec<(usize, &'static str, u64)> {
        let mut events: Vec<_> = self.lock().events.drain().map(|((m, s), n)| (m, s, n)).collect();
        events.sort();
        events
    }

    pub fn admitted(&self) -> usize {
        self.lock().entries.len()
    }

    /// After stop: take() answers [] at once and every call left is dropped (its caller sees the connection close).
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        state.entries.clear();
        state.queue.clear();
        drop(state);
        self.queued.notify_all();
    }
}
