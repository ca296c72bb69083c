//! A bound on the request bytes the front holds for messages not yet whole, across all connections: a caller that
//! declares big messages and stalls cannot make the process hold more (serve.rs reads native calls under it,
//! proxy.rs forwards the rest under it).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    /// Room for `max_admitted` messages of the largest size being read at once.
    pub fn new(max_admitted: usize, max_message_bytes: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit: max_admitted.max(1).saturating_mul(max_message_bytes.saturating_add(5)),
            used: AtomicUsize::new(0),
        })
    }
}

/// Bytes one request holds from a budget; given back when dropped.
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    pub fn new(budget: &Arc<Budget>) -> Self {
        Held {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Hold `bytes` now (more, or fewer): false, holding what it held, if more would pass the limit.
    pub fn set(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            let before = self.budget.used.fetch_add(more, Ordering::SeqCst);
            if before.saturating_add(more) > self.budget.limit {
                self.budget.used.fetch_sub(more, Ordering::SeqCst);
                return false;
            }
        } else {
            self.budget.used.fetch_sub(self.bytes - bytes, Ordering::SeqCst);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// gRPC message boundaries in a request body read chunk by chunk: how many bytes of the message not yet whole
/// have come (a forwarded body holds only those: the receiver has the whole messages).
#[derive(Default)]
pub struct Framing {
    header: Vec<u8>,     // the 5-byte message header, while it is incomplete
    payload_left: usize, // bytes of the current message still to come
    partial: usize,      // bytes of the current message so far
}

impl Framing {
    pub fn feed(&mut self, mut chunk: &[u8]) -> usize {
        while !chunk.is_empty() {
            let n = if self.payload_left > 0 {
                let n = self.payload_left.min(chunk.len());
                self.payload_left -= n;
                n
            } else {
                let n = (5 - self.header.len()).min(chunk.len());
                self.header.extend_from_slice(&chunk[..n]);
                if self.header.len() == 5 {
                    let h = &self.header;
                    self.payload_left = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                    self.header.clear();
                }
                n
            };
            chunk = &chunk[n..];
            self.partial += n;
            if self.payload_left == 0 && self.header.is_empty() {
                self.partial = 0; // a message ended here
            }
        }
        self.partial
    }
}
