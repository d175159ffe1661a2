//! Renames: a state the store holds under an old name, carried over to the
//! new one by a migration instead of computed again.
//!
//! A query says what it renamed (`Query::renamed`); finalization computes,
//! beside each state's definition, the path and definition it had under the
//! old names. A store that holds the old path with that definition renames
//! its table; states downstream of a renamed one, whose definitions name it,
//! are kept as they are.

use crate::builder::{Query, Stream};

impl Query {
    /// Declares that what this query calls `new` the store's older query
    /// called `old`: an input, a cache, an output or a named stream (any
    /// name segment of a path). Opening with
    /// [`migrate`](../stepping_store/struct.OpenOptions.html#method.migrate)
    /// then renames the states the store holds under the old name, and keeps
    /// the states computed from them, without computing anything again.
    /// Without it, a renamed state is a new state (computed from the inputs)
    /// and the old one is dropped.
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (graph, _) = Graph::build(|q| {
    ///     q.renamed("readings", "reads");
    ///     Ok(q.input::<i64>("reads")?.0)
    /// })?;
    /// let (path, _) = graph.states()[0].before_renames().expect("renamed");
    /// assert_eq!(path.as_str(), "readings");
    /// # Ok::<(), GraphError>(())
    /// ```
    pub fn renamed(&self, old: &str, new: &str) {
        self.b
            .borrow_mut()
            .renames
            .push((old.to_owned(), new.to_owned()));
    }
}

impl<T, S> Stream<'_, T, S> {
    /// Declares that the store's older query called this stream `old`
    /// (see [`Query::renamed`]).
    pub fn renamed_from(self, old: &str) -> Self {
        self.query().renamed(old, self.path().as_str());
        self
    }
}

/// `path` under the names before `renames` ((old, new) pairs): each name
/// segment (a run of letters, digits and `_`) equal to a new name becomes
/// its old one, and a whole path equal to a new one becomes the old one.
pub(crate) fn before(path: &str, renames: &[(String, String)]) -> String {
    if let Some((old, _)) = renames.iter().find(|(_, new)| new == path) {
        return old.clone();
    }
    let mut out = String::with_capacity(path.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match renames.iter().find(|(_, new)| new == word) {
            Some((old, _)) => out.push_str(old),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in path.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::before;

    #[test]
    fn names_are_replaced_segment_by_segment() {
        let r = [("reads".to_owned(), "readings".to_owned())];
        assert_eq!(before("readings", &r), "reads");
        assert_eq!(
            before("user_meters.join(readings).map", &r),
            "user_meters.join(reads).map"
        );
        assert_eq!(before("readings_cache", &r), "readings_cache");
        let whole = [("a.b".to_owned(), "c".to_owned())];
        assert_eq!(before("c", &whole), "a.b");
    }
}
