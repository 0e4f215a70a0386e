//! The book's `trace` package: a tracer that narrates what the room does to a writer, or stays
//! silent. `--trace` gives the rooms a tracer on stdout; otherwise they get [`Tracer::off`].

use std::fmt::Display;
use std::io::Write;
use std::sync::Mutex;

/// Narrates events, one line each, to the writer it was made with.
pub struct Tracer {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl Tracer {
    /// A tracer that writes each event as a line to `writer`.
    pub fn new(writer: impl Write + Send + 'static) -> Tracer {
        Tracer {
            out: Some(Mutex::new(Box::new(writer))),
        }
    }

    /// A tracer that ignores every event.
    pub fn off() -> Tracer {
        Tracer { out: None }
    }

    /// Writes `event` and a newline. A failed write is dropped: tracing must never stop a room.
    pub fn trace(&self, event: impl Display) {
        if let Some(out) = &self.out {
            let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Ignored on purpose: a closed stdout must not take the chat down with it.
            let _ = writeln!(out, "{event}").and_then(|()| out.flush());
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.out.is_some() {
            "Tracer(on)"
        } else {
            "Tracer(off)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn new_writes_each_event_as_a_line() {
        let buffer = Buffer::default();
        let tracer = Tracer::new(buffer.clone());
        tracer.trace("Hello trace package.");
        tracer.trace(format_args!("Message received: {}", 42));
        assert_eq!(
            buffer.text(),
            "Hello trace package.\nMessage received: 42\n"
        );
    }

    #[test]
    fn off_writes_nothing() {
        let buffer = Buffer::default();
        let silent = Tracer::off();
        silent.trace("something");
        assert_eq!(buffer.text(), "");
        // And it really holds no writer: there is nowhere it could write.
        assert_eq!(format!("{silent:?}"), "Tracer(off)");
    }
}
