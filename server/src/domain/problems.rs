//! Collects every problem of a request, each located by a JSON pointer, so a client sees all
//! of them at once.
use app::wire::ErrorDetail;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Problems(Vec<ErrorDetail>);

impl Problems {
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ErrorDetail {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<ErrorDetail> {
        self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = &ErrorDetail> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
