//! A run's log as stored: numbered lines of an attempt, from the handler or from the engine.

/// One line of a run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub id: i64,
    pub attempt: i32,
    /// `stdout`, `stderr`, `system` (the engine's own lines).
    pub stream: String,
    pub message: String,
}

impl LogLine {
    /// The line as the plain-text log shows it: the engine's lines prefixed `[switchyard]`.
    pub fn text(&self) -> String {
        match self.stream.as_str() {
            "system" => format!("[switchyard] {}\n", self.message),
            _ => format!("{}\n", self.message),
        }
    }
}
