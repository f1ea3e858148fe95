//! Which events of `$all` a read or subscription wants: [`EventFilter`].
//!
//! A filter constrains an event's stream name and its type, each by a list of prefixes (any
//! one matching is enough) and by a regular expression; every constraint that is set must
//! hold. Regular expressions use `fancy-regex`, so the look-arounds and back-references of
//! .NET-style patterns (KurrentDB's clients send those) compile, and they match anywhere in
//! the name unless anchored, as .NET's `Regex.IsMatch` does. Invariant: a filter is checked
//! by `matches_stream` before an event is decoded and by `matches_type` after, so a filter on
//! stream names alone never costs a decode of an event it drops.

use std::sync::Arc;

use fancy_regex::Regex;

use crate::error::{Error, Result};

/// Which events of `$all` a read or subscription wants. The default matches every event.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    stream: NameFilter,
    event_type: NameFilter,
}

/// The constraints on one name (a stream's, or an event's type).
#[derive(Debug, Clone, Default)]
struct NameFilter {
    /// Empty: no constraint. Otherwise the name starts with one of these.
    prefixes: Vec<String>,
    /// Shared: a subscription clones its filter for every read it makes.
    regex: Option<Arc<Regex>>,
}

impl NameFilter {
    fn matches(&self, name: &str) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str())))
            && self.regex.as_ref().is_none_or(|regex| {
                // A pattern that exceeds the backtracking limit on this name does not match
                // it: dropping the event is the answer a bounded matcher can give.
                regex.is_match(name).unwrap_or(false)
            })
    }
}

fn compile(pattern: &str) -> Result<Arc<Regex>> {
    Regex::new(pattern)
        .map(Arc::new)
        .map_err(|error| Error::InvalidFilter {
            pattern: pattern.to_owned(),
            reason: error.to_string(),
        })
}

impl EventFilter {
    /// Every event.
    #[must_use]
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Only events of streams whose name starts with `prefix`.
    #[must_use]
    pub fn stream_prefix(self, prefix: impl Into<String>) -> Self {
        self.stream_prefixes([prefix])
    }

    /// Only events of streams whose name starts with one of `prefixes` (none: any stream).
    #[must_use]
    pub fn stream_prefixes(
        mut self,
        prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.stream.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of streams whose name matches the regular expression `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] if the pattern does not compile.
    pub fn stream_regex(mut self, pattern: &str) -> Result<Self> {
        self.stream.regex = Some(compile(pattern)?);
        Ok(self)
    }

    /// Only events whose type starts with `prefix`.
    #[must_use]
    pub fn event_type_prefix(self, prefix: impl Into<String>) -> Self {
        self.event_type_prefixes([prefix])
    }

    /// Only events whose type starts with one of `prefixes` (none: any type).
    #[must_use]
    pub fn event_type_prefixes(
        mut self,
        prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.event_type.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Only events whose type matches the regular expression `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] if the pattern does not compile.
    pub fn event_type_regex(mut self, pattern: &str) -> Result<Self> {
        self.event_type.regex = Some(compile(pattern)?);
        Ok(self)
    }

    /// Whether the filter lets every event through.
    #[must_use]
    pub fn matches_everything(&self) -> bool {
        self.stream.prefixes.is_empty()
            && self.stream.regex.is_none()
            && self.event_type.prefixes.is_empty()
            && self.event_type.regex.is_none()
    }

    /// The stream-name prefixes, any one of which matches; empty when not constrained.
    #[must_use]
    pub fn stream_prefix_list(&self) -> &[String] {
        &self.stream.prefixes
    }

    /// The stream-name regular expression's source, if any.
    #[must_use]
    pub fn stream_pattern(&self) -> Option<&str> {
        self.stream.regex.as_deref().map(Regex::as_str)
    }

    /// The event-type prefixes, any one of which matches; empty when not constrained.
    #[must_use]
    pub fn event_type_prefix_list(&self) -> &[String] {
        &self.event_type.prefixes
    }

    /// The event-type regular expression's source, if any.
    #[must_use]
    pub fn event_type_pattern(&self) -> Option<&str> {
        self.event_type.regex.as_deref().map(Regex::as_str)
    }

    /// The filter as stored: its prefixes and its patterns' sources.
    pub(crate) fn to_stored(&self) -> StoredFilter {
        let source = |regex: &Option<Arc<Regex>>| regex.as_ref().map(|r| r.as_str().to_owned());
        StoredFilter {
            stream_prefixes: self.stream.prefixes.clone(),
            stream_regex: source(&self.stream.regex),
            event_type_prefixes: self.event_type.prefixes.clone(),
            event_type_regex: source(&self.event_type.regex),
        }
    }

    /// The filter `stored` describes.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] if a stored pattern no longer compiles.
    pub(crate) fn from_stored(stored: StoredFilter) -> Result<Self> {
        let mut filter = EventFilter::all()
            .stream_prefixes(stored.stream_prefixes)
            .event_type_prefixes(stored.event_type_prefixes);
        if let Some(pattern) = &stored.stream_regex {
            filter = filter.stream_regex(pattern)?;
        }
        if let Some(pattern) = &stored.event_type_regex {
            filter = filter.event_type_regex(pattern)?;
        }
        Ok(filter)
    }

    pub(crate) fn matches_stream(&self, stream: &str) -> bool {
        self.stream.matches(stream)
    }

    pub(crate) fn matches_type(&self, event_type: &str) -> bool {
        self.event_type.matches(event_type)
    }
}

/// An [`EventFilter`] as the store keeps it (in a persistent subscription group's
/// definition): the prefixes, and each regular expression's source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stream_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    event_type_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_type_regex: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_filter_reads_back_as_the_same_filter() {
        let filter = EventFilter::all()
            .stream_prefixes(["orders-", "invoices-"])
            .event_type_regex("^(?!\\$)")
            .expect("compiles");
        let stored = filter.to_stored();
        let json = serde_json::to_string(&stored).expect("serializes");
        let back: StoredFilter = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, stored);
        let again = EventFilter::from_stored(back).expect("compiles again");
        for (stream, event_type) in [
            ("orders-1", "Placed"),
            ("orders-1", "$metadata"),
            ("carts-1", "Placed"),
        ] {
            assert_eq!(
                again.matches_stream(stream) && again.matches_type(event_type),
                filter.matches_stream(stream) && filter.matches_type(event_type),
                "{stream} {event_type}"
            );
        }
        assert_eq!(
            serde_json::to_string(&EventFilter::all().to_stored()).expect("serializes"),
            "{}",
            "an empty filter stores nothing"
        );
    }

    #[test]
    fn the_default_matches_everything() {
        let filter = EventFilter::all();
        assert!(filter.matches_stream("orders-1") && filter.matches_stream(""));
        assert!(filter.matches_type("$metadata") && filter.matches_type("Placed"));
    }

    #[test]
    fn any_prefix_of_a_list_is_enough() {
        let filter = EventFilter::all().stream_prefixes(["orders-", "invoices-"]);
        assert!(filter.matches_stream("orders-1"));
        assert!(filter.matches_stream("invoices-7"));
        assert!(!filter.matches_stream("customers-1"));
        assert!(filter.matches_type("anything"));
    }

    #[test]
    fn an_empty_prefix_list_constrains_nothing() {
        let filter = EventFilter::all().event_type_prefixes(Vec::<String>::new());
        assert!(filter.matches_type("Placed"));
    }

    #[test]
    fn a_regex_matches_anywhere_unless_anchored() {
        let filter = EventFilter::all().event_type_regex("laced").unwrap();
        assert!(filter.matches_type("Placed"));
        let anchored = EventFilter::all().event_type_regex("^laced").unwrap();
        assert!(!anchored.matches_type("Placed"));
    }

    #[test]
    fn look_arounds_compile_and_apply() {
        // The system-event exclusion a .NET user might write with a negative look-ahead.
        let filter = EventFilter::all().event_type_regex(r"^(?!\$).*").unwrap();
        assert!(filter.matches_type("Placed"));
        assert!(!filter.matches_type("$metadata"));
        // KurrentDB clients' own default, a character class.
        let default = EventFilter::all().event_type_regex(r"^[^\$].*").unwrap();
        assert!(default.matches_type("Placed") && !default.matches_type("$metadata"));
    }

    #[test]
    fn stream_and_type_constraints_must_both_hold() {
        let filter = EventFilter::all()
            .stream_regex(r"^orders-\d+$")
            .unwrap()
            .event_type_prefix("Pla");
        assert!(filter.matches_stream("orders-12") && filter.matches_type("Placed"));
        assert!(!filter.matches_stream("orders-x"));
        assert!(!filter.matches_type("Shipped"));
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_an_error_naming_it() {
        let error = EventFilter::all().stream_regex("(unclosed").unwrap_err();
        match error {
            Error::InvalidFilter { pattern, reason } => {
                assert_eq!(pattern, "(unclosed");
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidFilter, got {other:?}"),
        }
    }
}
