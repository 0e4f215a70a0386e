//! How fast one connection may post: a token bucket, kept by the connection's reader.
//!
//! A sender gets `burst` messages at once and `per_second` after that. Over the limit, its
//! reader waits before passing the next message on and reads nothing meanwhile, so TCP pushes
//! back on the flooder alone and nobody else's queue fills with its words (the room's slow-reader
//! eviction would otherwise turn a flood into a weapon against ordinary readers). A sender held
//! back without a pause for `patience` is flooding and is closed (1008). The numbers are chosen
//! so a person typing never meets them: see the README's "Limits".

use std::time::{Duration, Instant};

/// The limit on one connection's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderLimit {
    /// Messages per second, once the burst is spent.
    pub per_second: u32,
    /// Messages that may come at once.
    pub burst: u32,
    /// How long a sender may be held back without a pause before it is closed.
    pub patience: Duration,
}

/// What the reader does with the message it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Pass it on now.
    Go,
    /// Wait this long first; `first` when the sender was not held back just before.
    Wait {
        /// How long.
        wait: Duration,
        /// The sender has just begun to be held back (tell it so, once).
        first: bool,
    },
    /// Held back for longer than the patience allows: close the connection.
    Close,
}

/// One connection's tokens.
#[derive(Debug)]
pub struct Bucket {
    /// May go below zero: messages already promised for when tokens come back.
    tokens: f32,
    last: Instant,
    /// Since when the sender has been held back without a pause.
    held_since: Option<Instant>,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(limit: &SenderLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst as f32,
            last: now,
            held_since: None,
        }
    }

    /// Takes a token for one message arriving at `now`.
    pub fn take(&mut self, limit: &SenderLimit, now: Instant) -> Take {
        let rate = limit.per_second as f32;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * rate).min(limit.burst as f32);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.held_since = None;
            return Take::Go;
        }
        let first = self.held_since.is_none();
        let since = *self.held_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= limit.patience {
            return Take::Close;
        }
        let wait = Duration::from_secs_f32((1.0 - self.tokens) / rate);
        self.tokens -= 1.0;
        Take::Wait { wait, first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: SenderLimit = SenderLimit {
        per_second: 4,
        burst: 16,
        patience: Duration::from_secs(10),
    };

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&LIMIT, start);
        for _ in 0..16 {
            assert_eq!(bucket.take(&LIMIT, start), Take::Go);
        }
        match bucket.take(&LIMIT, start) {
            Take::Wait { wait, first } => {
                assert!(first);
                assert!((240..=260).contains(&wait.as_millis()), "{wait:?}");
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        // The next one right behind it waits for its own token too, and is no longer the first.
        match bucket.take(&LIMIT, start) {
            Take::Wait { wait, first } => {
                assert!(!first);
                assert!((490..=510).contains(&wait.as_millis()), "{wait:?}");
            }
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_person_posting_twice_a_second_is_never_held_back() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&LIMIT, start);
        for n in 0..600 {
            let at = start + Duration::from_millis(500 * n);
            assert_eq!(bucket.take(&LIMIT, at), Take::Go, "message {n}");
        }
    }

    #[test]
    fn a_pause_forgives_and_a_flood_is_closed_after_the_patience() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&LIMIT, start);
        let mut now = start;
        // Flood: every message arrives the moment the reader lets it.
        let mut closed_at = None;
        for _ in 0..1000 {
            match bucket.take(&LIMIT, now) {
                Take::Go => {}
                Take::Wait { wait, .. } => now += wait,
                Take::Close => {
                    closed_at = Some(now);
                    break;
                }
            }
        }
        let held = closed_at.expect("a flood is closed") - start;
        assert!(held >= LIMIT.patience && held < LIMIT.patience + Duration::from_secs(2));

        // Held back briefly, then a pause of a few seconds: all is forgiven.
        let mut bucket = Bucket::new(&LIMIT, start);
        for _ in 0..17 {
            bucket.take(&LIMIT, start);
        }
        let later = start + Duration::from_secs(3);
        assert_eq!(bucket.take(&LIMIT, later), Take::Go);
        assert!(bucket.held_since.is_none());
    }
}
