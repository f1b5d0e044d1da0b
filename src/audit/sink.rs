//! The JSON-lines sink for a SIEM: every committed event, one line each (the canonical object
//! plus `prev` and `hash`, as `mandate audit export` prints), to stdout or appended to a file.
use super::event::Row;
use std::io::Write;

pub struct Sink {
    out: Box<dyn Write + Send>,
    failed: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink(..)")
    }
}

impl Sink {
    /// `stdout` (or `-`) or a file path, appended to.
    pub fn open(target: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "stdout" || target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)?,
            )
        };
        Ok(Self {
            out: Box::new(std::io::BufWriter::with_capacity(256 * 1024, out)),
            failed: false,
        })
    }

    /// Writes committed rows; a failing sink is logged once and never blocks the log itself.
    pub fn write(&mut self, rows: &[Row]) {
        let mut r = Ok(());
        for row in rows {
            r = r.and_then(|()| {
                self.out.write_all(row.json_line().as_bytes())?;
                self.out.write_all(b"\n")
            });
        }
        let r = r.and_then(|()| self.out.flush());
        self.report(r);
    }

    pub fn flush(&mut self) {
        let r = self.out.flush();
        self.report(r);
    }

    fn report(&mut self, r: std::io::Result<()>) {
        match r {
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::error!(error = %e, "audit sink write failed");
            }
            Ok(()) => self.failed = false,
            Err(_) => {}
        }
    }
}
