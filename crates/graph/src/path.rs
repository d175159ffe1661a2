//! Stable names of vertices and of the state they keep.

use std::fmt;
use std::sync::Arc;

/// A vertex's stable name: `/`-separated segments the user controls through
/// input, stream and cache names and [`Query::scope`](crate::Query::scope).
///
/// A stateful vertex's stored table is named from its path, and a default
/// path is derived only from the vertex's own inputs (`reads.join(meters)`),
/// so editing one part of a query never renames the state of another part.
///
/// ```
/// use stepping_graph::Path;
/// let p = Path::new("billing").child("totals");
/// assert_eq!(p.to_string(), "billing/totals");
/// assert_eq!(p.last(), "totals");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(Arc<str>);

impl Path {
    /// A path of one or more `/`-separated segments.
    pub fn new(path: &str) -> Self {
        Path(Arc::from(path))
    }

    /// This path with `segment` appended.
    pub fn child(&self, segment: &str) -> Self {
        if self.0.is_empty() {
            Path::new(segment)
        } else {
            Path(Arc::from(format!("{}/{segment}", self.0)))
        }
    }

    /// This path with `suffix` appended to its last segment.
    pub fn suffixed(&self, suffix: &str) -> Self {
        Path(Arc::from(format!("{}{suffix}", self.0)))
    }

    /// The whole path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn last(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The segments, first to last.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({:?})", &*self.0)
    }
}

impl From<&str> for Path {
    fn from(path: &str) -> Self {
        Path::new(path)
    }
}
